"""Summarise the DVC experiments of a sweep into reports/sweep.json (`kd.evaluation.sweep`):
every configuration as mean +- std over its seeds, and the frontier the benchmark stage times.

    python tools/sweep.py       # reads `dvc exp show --json -A` and reports/sweep.json, writes it
"""

import argparse
from pathlib import Path

from kd.errors import exit_on_error
from kd.evaluation.sweep import update_summary

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/sweep.json")
    exit_on_error(update_summary)(Path(parser.parse_args().out))
