"""Storyboards: a series of shots of several characters from one plan file, run with one pipeline load,
written as each output is scored, recorded in a ledger so a killed run resumes, and reported in one
HTML page. plan.py reads and checks the plan; ledger.py is the run's SQLite record; shot.py runs one shot
on a loaded pipeline; runner.py drives a whole plan; report.py writes summary.json and report.html."""
