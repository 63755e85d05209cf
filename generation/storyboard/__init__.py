"""Storyboards: a series of shots of several characters from one plan file, run with one pipeline load,
written as each output is scored, recorded in a ledger so a killed run resumes, and reported in one
HTML page. plan.py reads and checks the plan; ledger.py is the run's SQLite record; shot.py makes and
scores a shot's takes on a loaded pipeline, and worker.py holds that pipeline (in this process, or one per
Ray actor: ray_workers.py, only with --ray); board.py is the run as the driver sees it, shot_run.py the
driver's side of one shot (the only code writing its files and ledger rows); runner.py drives a whole
plan; report.py writes summary.json and report.html."""
