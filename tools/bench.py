"""Throughput and latency benchmarks, one JSON line per measurement; see ``--help``.

python tools/bench.py <train|eval|extract|infer> [--device cuda] [--preset emotion_llama_7b] [--append]
Exit code 0 on success, 2 on a usage or setup error (said in one sentence on stderr).
"""

from __future__ import annotations

import sys

from emotion_llama.cli import user_errors


def main() -> int:
    from emotion_llama.bench import main as bench
    from emotion_llama.bench import quiet_libraries

    with user_errors(), quiet_libraries():
        bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
