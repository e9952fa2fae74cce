"""scripts.transfer: the Table 4 style summary, and a tiny run over both encoders that a re-run skips."""

from scripts import jobs, transfer


def test_table_gives_mean_std_per_fraction_and_encoder():
    plan = transfer.TransferPlan(name="test", fractions=(0.01, 1.0), samples=2)
    rows = [{"encoder": encoder, "fraction": fraction, "sample": sample, "train_examples": size,
             "metrics": {"accuracy": value}}
            for encoder, fraction, sample, size, value in [
                ("mtdnn", 0.01, 1, 25, 0.56), ("mtdnn", 0.01, 2, 25, 0.58), ("pretrained", 0.01, 1, 25, 0.52),
                ("pretrained", 0.01, 2, 25, 0.54), ("mtdnn", 1.0, 1, 2490, 0.70)]]
    assert transfer.curve(rows, "mtdnn", 0.01) == [0.56, 0.58]
    lines = transfer.table_lines(plan, rows)
    assert lines[2] == "| 1% | 25 | 57.0 ± 1.4 | 53.0 ± 1.4 | +4.0 | 2/2 |"
    assert lines[3] == "| 100% | 2490 | 70.0 | – | – | 1/0 |"


def test_a_tiny_run_fine_tunes_both_encoders_on_each_fraction(tiny_model_dir, task_files, tmp_path, monkeypatch):
    plan = transfer.TransferPlan(name="test", held_out="pair", fractions=(0.25, 1.0), samples=2, epochs=1, source_caps={},
                         tasks=(task_files["single"], task_files["score"], task_files["pair"]),
                         model=str(tiny_model_dir), max_seq_length=32, learning_rate=1e-3)
    rows = transfer.run_all(plan, tmp_path, workers=2).rows()  # two spawned processes, one thread each
    assert sorted((row["encoder"], row["fraction"], row["sample"], row["train_examples"]) for row in rows) == sorted(
        (encoder, fraction, sample, 16 if fraction == 0.25 else 64)
        for encoder in transfer.ENCODERS for fraction in (0.25, 1.0) for sample in (1, 2))
    stage2 = (tmp_path / "runs" / "mtdnn" / "config.yaml").read_text()
    assert "name: pair" not in stage2 and "name: score" in stage2  # the held-out task is not in stage 2
    finetuned = (tmp_path / "runs" / "mtdnn" / "frac-0.25" / "sample-1" / "config.yaml").read_text()
    assert "checkpoints/step-" in finetuned and "pair-train-n16-s1.jsonl" in finetuned
    assert str(tiny_model_dir) in (tmp_path / "runs" / "pretrained" / "frac-1" / "sample-2" / "config.yaml").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job was run again")

    monkeypatch.setattr(jobs, "run_stage", no_training)
    assert transfer.run_all(plan, tmp_path).rows() == rows
