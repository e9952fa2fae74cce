"""scripts.pipeline: stage 2 on every task, stage 3 per task, and the dev table of both."""

import json

import yaml

from scripts import pipeline


def test_pipeline_prints_the_dev_table_of_both_stages(tiny_model_dir, task_files, tmp_path, capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "train": {"learning_rate": 1e-3}, "output_dir": str(tmp_path / "run")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert pipeline.main(["--config", str(tmp_path / "config.yaml"), "--quick", "--set", "train.max_steps=3",
                          "--finetune-set", "train.max_steps=2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| task | metric | after stage 2 | after stage 3 |"
    assert [line.split(" | ")[:2] for line in table[2:]] == [["| single", "accuracy"], ["| score", "pearson"],
                                                              ["| score", "spearmanr"]]
    rows = json.loads((tmp_path / "run" / "dev_table.json").read_text())
    assert all(row["stage2"] is not None and row["stage3"] is not None for row in rows)
    for task in ("single", "score"):
        stage3 = yaml.safe_load((tmp_path / "run" / "finetune" / task / "config.yaml").read_text())
        assert stage3["train"]["max_steps"] == 2 and stage3["data"]["max_train_samples"] == 256
        assert [entry["name"] for entry in stage3["tasks"]] == [task]
