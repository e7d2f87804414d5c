"""The shared experiment runner.

    python -m experiments.run SLUG --preset smoke|cpu|gpu|tpu [--out DIR] [--set key=value ...]

Loads ``experiments/<slug>/config.py:get_config(preset)``, applies validated ``--set`` overrides,
checks that the output directory is writable, runs ``experiments/<slug>/main.py:run(config,
out_dir)`` and writes ``DIR/results.json`` with at least ``experiment, preset, claim, passed,
metrics, seconds, compile, versions`` (``compile``: XLA backend compile times of the run's programs,
the slowest ones named, and the slowest ``flowjax.train`` dispatch). Experiments are discovered from the folders of this package.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections

PRESETS = ("smoke", "cpu", "gpu", "tpu")
EXPERIMENTS_DIR = Path(__file__).resolve().parent
REQUIRED_RESULT_KEYS = ("claim", "passed", "metrics")


def discover() -> dict[str, str]:
    """Map every experiment slug (``config.SLUG``) to its package name, e.g. ``ot-cfm -> ot_cfm``."""
    found = {}
    for info in pkgutil.iter_modules([str(EXPERIMENTS_DIR)]):
        if info.ispkg and (EXPERIMENTS_DIR / info.name / "config.py").exists():
            found[info.name.replace("_", "-")] = info.name
    return dict(sorted(found.items()))


def resolve(slug: str) -> str:
    """Package name for a slug (dashes or underscores); a clear error with suggestions otherwise."""
    table = discover()
    key = slug.replace("_", "-")
    if key not in table:
        close = difflib.get_close_matches(key, table, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown experiment {slug!r}.{hint} Available: {', '.join(table)}.")
    return table[key]


def config_module(slug: str):
    return importlib.import_module(f"experiments.{resolve(slug)}.config")


def load_config(slug: str, preset: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}.")
    cfg = config_module(slug).get_config(preset)
    return apply_overrides(cfg, overrides)


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}.")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if current is not None and not isinstance(value, type(current)) and not (
        isinstance(current, (tuple, list)) and isinstance(value, (tuple, list))
    ):
        raise ValueError(f"expected a value of type {type(current).__name__}, got {text!r}.")
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply ``key=value`` overrides (dotted keys allowed); unknown keys and wrong types fail."""
    cfg = ml_collections.ConfigDict(cfg.to_dict()) if overrides else cfg
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}.")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for depth, part in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(parts[:depth]) or "the config"
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"--set: unknown key {key!r} ({part!r} is not in {where}).{hint} Valid keys: {', '.join(sorted(keys))}.")
            if depth < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = _parse_value(text, node[parts[-1]])
        except ValueError as err:
            raise ValueError(f"--set {key}: {err}") from None
    return cfg


def check_output_dir(out_dir: Path, *, min_free_bytes: int = 50 * 2**20) -> None:
    """Fail before any work if ``out_dir`` cannot be written or its disk is nearly full."""
    out_dir.mkdir(parents=True, exist_ok=True)
    probe = out_dir / ".write_probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output directory {out_dir} is not writable: {err}") from None
    free = os.statvfs(out_dir).f_bavail * os.statvfs(out_dir).f_frsize
    if free < min_free_bytes:
        raise OSError(f"output directory {out_dir} has only {free / 2**20:.1f} MiB free (need {min_free_bytes / 2**20:.0f}).")


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax's event name, with fun_name
TRAIN_DISPATCH_NAME = "train_dispatch"  # the jitted program of flowjax.train (one or several steps)


class CompileTimes:
    """Collects XLA backend compile times per program while active (``jax.monitoring`` listener)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, float]] = []

    def _listener(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.records.append((str(kwargs.get("fun_name", "?")), float(duration)))

    def __enter__(self) -> "CompileTimes":
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        import jax

        jax.monitoring.unregister_event_duration_listener(self._listener)

    def summary(self) -> dict:
        """Count, total, the slowest programs, and the slowest flowjax training dispatch."""
        slowest = sorted(self.records, key=lambda r: -r[1])
        train = [d for name, d in self.records if name in (TRAIN_DISPATCH_NAME, f"jit({TRAIN_DISPATCH_NAME})")]
        return {
            "programs": len(self.records),
            "total_s": sum(d for _, d in self.records),
            "max_s": slowest[0][1] if slowest else 0.0,
            "slowest": [[name, d] for name, d in slowest[:5]],
            "train_dispatch_programs": len(train),
            "train_dispatch_max_s": max(train) if train else None,
        }


def run_experiment(slug: str, preset: str, *, out_dir: Path | str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Run one experiment and write its ``results.json``; returns the results dict."""
    from flowjax.experiment import versions, write_json_atomic

    package = resolve(slug)
    cfg = load_config(slug, preset, overrides)
    cfg_mod = config_module(slug)
    out = Path(out_dir) if out_dir is not None else Path("runs") / preset / package.replace("_", "-")
    check_output_dir(out)
    main = importlib.import_module(f"experiments.{package}.main")
    start = time.perf_counter()
    with CompileTimes() as compiles:
        result = main.run(cfg, out)
    seconds = time.perf_counter() - start
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in result]
    if missing:
        raise RuntimeError(f"experiment {slug} returned results without {missing}.")
    paper = getattr(cfg_mod, "PAPER", {})
    payload = {
        "experiment": getattr(cfg_mod, "SLUG", package.replace("_", "-")),
        "preset": preset,
        "paper": paper,
        "overrides": list(overrides),
        "seconds": seconds,
        "compile": compiles.summary(),
        "versions": versions(),
        "config": cfg.to_dict(),
        **result,
    }
    payload["passed"] = bool(payload["passed"])
    write_json_atomic(out / "results.json", payload)
    return payload


FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def accelerator_plugin_installed() -> bool:
    """Whether JAX could pick a GPU or TPU backend here (a PJRT plugin or libtpu is installed)."""
    import importlib.metadata
    import importlib.util

    if list(importlib.metadata.entry_points(group="jax_plugins")):
        return True
    return any(importlib.util.find_spec(name) is not None for name in ("jax_plugins", "libtpu"))


def smoke_xla_flags(preset: str, environ: dict[str, str]) -> str | None:
    """The XLA_FLAGS a run should start with, or None to leave them as they are.

    A smoke run is a handful of short programs, so it is compile-bound on CPU, and most of XLA:CPU's
    compile time is LLVM optimising code that then runs for milliseconds. On a CPU-only install the
    smoke preset therefore compiles at backend optimisation level 0 (code generation only; HLO
    passes and numerics semantics are unchanged). Left alone: the other presets (their training runs
    long enough to want optimised code), an XLA_FLAGS that already picks a level, and any machine
    where JAX could pick an accelerator (unless ``JAX_PLATFORMS=cpu``), since the flag would reach
    that backend's compiler too.
    """
    flags = environ.get("XLA_FLAGS", "")
    if preset != "smoke" or "xla_backend_optimization_level" in flags:
        return None
    if environ.get("JAX_PLATFORMS", "").strip().lower() != "cpu" and accelerator_plugin_installed():
        return None
    return f"{flags} {FAST_COMPILE_FLAG}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("slug", help="experiment name, e.g. cfm or ot-cfm (see --list)", nargs="?")
    parser.add_argument("--preset", default="smoke", help=f"one of {PRESETS}")
    parser.add_argument("--out", default=None, help="output directory (default runs/PRESET/SLUG)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable); keys must exist")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    args = parser.parse_args(argv)
    if args.list or not args.slug:
        for slug in discover():
            print(slug)
        return 0
    flags = smoke_xla_flags(args.preset, dict(os.environ))
    if flags is not None:  # before JAX starts a backend, which reads XLA_FLAGS once
        os.environ["XLA_FLAGS"] = flags
    try:
        result = run_experiment(args.slug, args.preset, out_dir=args.out, overrides=args.overrides)
    except (ValueError, PermissionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = "PASSED" if result["passed"] else "FAILED"
    print(f"{result['experiment']} [{args.preset}] {status} in {result['seconds']:.1f}s: {result['claim']}")
    for name, value in sorted(result["metrics"].items()):
        print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
