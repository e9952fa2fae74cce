"""Experiments on mtdnn, each run from the repository root as `python -m scripts.<driver>` (the Makefile's targets).

Drivers: reproduce, transfer, ablation (each with its plan, report and plots where they need their own module),
pipeline, benchmark (its contenders run as scripts.bench_contenders), rehearsal (on scripts.glue_shapes),
kill_and_resume, profile_step. What the experiments share, one job per module: plan (what a run trains), subsets
(random training subsets), jobs (running them), results (storing them), predictions (a finished run's per-example
dev predictions), stats (mean ± std over seeds), bootstrap (paired intervals of a difference), report (sections of
docs/results.md), machine (what they ran on).
"""
