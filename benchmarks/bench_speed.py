"""Speed of skfalcon next to sbi: fit, sampling, log_prob, peak memory, one epoch profiled.

One command prints five markdown tables (and writes them, with a JSON record, under
``benchmarks/results/``):

1. **fit**: wall time of a fit at default hyperparameters for each task and number of
   simulations, skfalcon and sbi's NPE (NSF) on the same data, repeats interleaved (the
   order alternates every repeat) so machine noise hits both; medians, their ratio and C2ST.
2. **sampling**: posterior samples per second for one observation and for many at once,
   against the per-sample scheme with 256 candidates (the engine's importance sampler on
   the same fitted networks) and against sbi; C2ST of each on one observation.
3. **log_prob**: pairs ``(theta, x)`` per second with :math:`Z(x)` cached, for one
   observation and for many.
4. **memory**: peak resident memory of a fit on many simulations of a 10-D task, in a
   subprocess, next to the size of the data.
5. **profile**: where one epoch's time goes (cProfile, by stage, and torch.profiler, by
   operator), and sampling and ``log_prob`` timed with the rows per forward pass used
   before and after the change this profile led to, interleaved in one process.

Run ``python benchmarks/bench_speed.py --help`` for the options and see
``benchmarks/README.md`` for the protocol. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_accuracy import (
    TASKS,
    check_importable,
    fit_sbi,
    fit_skfalcon,
    import_optimizer_machinery,
    n_cores,
    sample_sbi,
    sample_skfalcon,
)

import skfalcon
from skfalcon.metrics import c2st

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SECTIONS = ("fit", "sampling", "log_prob", "memory", "profile")
METHODS = ("skfalcon", "sbi")
# The per-sample scheme the sampling table compares with: candidates per output sample.
PER_SAMPLE_CANDIDATES = 256


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Stopwatch:
    """Wall and process CPU seconds of a ``with`` block (CPU time suffers less from a
    loaded machine: with one thread it counts only the cycles this process ran)."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=".1f", missing="—"):
    return missing if value is None else format(value, spec)


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def simulations(task, n, seed=0):
    """``n`` prior simulations of ``task``, the same for every method and repeat."""
    rng = np.random.RandomState([n, seed, 1])
    theta = task.sample_prior(n, random_state=rng)
    return theta, task.simulate(theta, random_state=rng)


# ---------------------------------------------------------------------------- 1. fit


def fit_method(method, task, theta, x, seed):
    """Fit one method; returns the fitted object, wall and CPU seconds, epochs if known."""
    with warnings.catch_warnings(), Stopwatch() as watch:
        warnings.simplefilter("ignore")
        if method == "skfalcon":
            model, _ = fit_skfalcon(task, theta, x, seed)
        else:
            model, _ = fit_sbi(task, theta, x, seed)
    epochs = model.n_iter_ if method == "skfalcon" else None
    return model, watch.wall, watch.cpu, epochs


def draw(method, model, x_o, n, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "skfalcon":
            return sample_skfalcon(model, x_o, n, seed)
        return sample_sbi(model, x_o, n)


def bench_fit(args, models):
    rows, records = [], []
    for task_name in args.tasks:
        task = TASKS[task_name]()
        x_o = task.observations(1)[1][0]
        for size in args.sizes:
            theta, x = simulations(task, size)
            with_c2st = size <= args.c2st_max_size
            reference = (
                task.reference_posterior(x_o, args.c2st_samples, random_state=0)
                if with_c2st
                else None
            )
            runs = {method: [] for method in METHODS}
            for repeat in range(args.repeats):
                order = METHODS if repeat % 2 == 0 else METHODS[::-1]
                for method in order:
                    model, wall, cpu, epochs = fit_method(method, task, theta, x, repeat)
                    score = None
                    if with_c2st:
                        score = c2st(reference, draw(method, model, x_o, args.c2st_samples, 0))
                    runs[method].append({"wall": wall, "cpu": cpu, "epochs": epochs, "c2st": score})
                    log(
                        f"[fit] {task_name} n={size:,} repeat {repeat} {method}: {wall:.1f} s "
                        f"wall, {cpu:.1f} s CPU"
                        + (f", {epochs} epochs" if epochs else "")
                        + (f", C2ST {score:.3f}" if score is not None else "")
                    )
                    if repeat == 0:
                        models[(task_name, size, method)] = model
            summary = {
                method: {
                    key: median([r[key] for r in runs[method]])
                    for key in ("wall", "cpu", "epochs", "c2st")
                }
                for method in METHODS
            }
            sk, sb = summary["skfalcon"], summary["sbi"]
            rows.append(
                [
                    task_name,
                    f"{size:,}",
                    fmt(sk["wall"]),
                    fmt(sb["wall"]),
                    fmt(sk["wall"] / sb["wall"], ".2f"),
                    fmt(sk["cpu"] / sb["cpu"], ".2f"),
                    fmt(sk["c2st"], ".3f"),
                    fmt(sb["c2st"], ".3f"),
                    fmt(sk["epochs"], ".0f"),
                ]
            )
            records.append({"task": task_name, "size": size, "runs": runs, "median": summary})
    table = markdown(
        [
            "task",
            "simulations",
            "skfalcon fit s",
            "sbi fit s",
            "ratio (wall)",
            "ratio (CPU)",
            "skfalcon C2ST",
            "sbi C2ST",
            "skfalcon epochs",
        ],
        rows,
    )
    return table, records


# ----------------------------------------------------------------------- 2. sampling


def fitted_models(args, models, task_name):
    """skfalcon and sbi fitted on the smallest fit size (reused from the fit section)."""
    size = min(args.sizes)
    task = TASKS[task_name]()
    missing = [m for m in METHODS if (task_name, size, m) not in models]
    if missing:
        theta, x = simulations(task, size)
        for method in missing:
            log(f"[models] fitting {method} on {task_name}, n={size:,} ...")
            models[(task_name, size, method)] = fit_method(method, task, theta, x, 0)[0]
    return task, size, {m: models[(task_name, size, m)] for m in METHODS}


def timed_draws(function, repeats):
    """Median wall seconds of ``repeats`` calls of ``function(k)`` and the last result."""
    seconds, result = [], None
    for k in range(repeats):
        with warnings.catch_warnings(), Stopwatch() as watch:
            warnings.simplefilter("ignore")
            result = function(k)
        seconds.append(watch.wall)
    return statistics.median(seconds), result


def per_sample_scheme(estimator, x_o, n, seed):
    """Falcon's scheme on skfalcon's fitted networks: ``PER_SAMPLE_CANDIDATES`` candidates
    per output sample from the mixture of the conditional flow and the marginal, weighted
    by importance and resampled (:func:`skfalcon.engine.importance_sample`).

    The marginal is the one the estimator infers with (the exact prior after a fit on
    prior simulations), which is cheaper per candidate than Falcon's learned marginal flow,
    so the speed-up against this baseline is a lower bound; of an ensemble it runs the
    first member alone, a lower bound again. Pools hold at most
    ``2**14`` candidates, the chunk size that runs fastest on a CPU.
    """
    from skfalcon.engine import EnsemblePosterior, importance_sample

    network, prior = estimator.network_, estimator.prior_
    per_pool = max(1, 2**14 // PER_SAMPLE_CANDIDATES)
    torch.manual_seed(seed)  # a benchmark: torch's global generator is fine here
    parts = []
    with torch.no_grad():
        # The estimator's own path from an observation to its summary (standardized x).
        summary = estimator._summaries(np.asarray(x_o, dtype=float)[None])
        if isinstance(network, EnsemblePosterior):  # one member: cheaper than the mixture
            network, summary = network.members[0], network.split(summary)[0]
        for start in range(0, n, per_pool):
            draw = importance_sample(
                network,
                summary,
                min(per_pool, n - start),
                num_proposals=PER_SAMPLE_CANDIDATES,
                beta=estimator.proposal_mixture_beta,
                bound=prior.hypercube_bound,
            )
            parts.append(draw.u[0])
    return prior.from_cube(torch.cat(parts).double()).numpy()


def sampling_rates(args, task_name, models):
    """Samples per second of each method on one task: one observation (each of
    ``args.sample_sizes``) and many at once; the per-sample scheme on the sample task."""
    task, size, fitted = fitted_models(args, models, task_name)
    estimator, posterior = fitted["skfalcon"], fitted["sbi"]
    x_o = task.observations(1)[1][0]
    xs = task.observations(args.n_observations, random_state=1)[1]
    x_batch = torch.as_tensor(xs, dtype=torch.float32)
    with_per_sample = task_name == args.sample_task
    rows, records, samples_for_c2st = [], [], {}
    cases = [("1", n) for n in args.sample_sizes] + [
        (f"{args.n_observations:,}", args.samples_per_observation)
    ]
    for observations, n in cases:
        many = observations != "1"
        total = n * (args.n_observations if many else 1)
        repeats = 1 if total >= 10**6 else args.sample_repeats
        rates = {}
        if many:
            calls = {
                "skfalcon": lambda k, n=n: estimator.sample(xs, n, random_state=k),
                "sbi": lambda k, n=n: posterior.sample_batched(
                    (n,), x=x_batch, show_progress_bars=False
                ),
            }
        else:
            calls = {
                "skfalcon": lambda k, n=n: estimator.sample(x_o, n, random_state=k),
                "sbi": lambda k, n=n: sample_sbi(posterior, x_o, n),
            }
            if with_per_sample and n <= args.per_sample_max:
                calls["per_sample"] = lambda k, n=n: per_sample_scheme(estimator, x_o, n, k)
        for name, call in calls.items():
            seconds, result = timed_draws(call, 1 if name == "per_sample" else repeats)
            rates[name] = total / seconds
            if not many:
                samples_for_c2st.setdefault(name, (n, result))
        per = rates.get("per_sample")
        log(
            f"[sampling] {task_name}, {observations} observation(s) x {n:,}: "
            + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
        )
        rows.append(
            [
                task_name,
                observations,
                f"{n:,}",
                fmt(rates["skfalcon"], ",.0f"),
                fmt(rates["sbi"], ",.0f"),
                fmt(rates["skfalcon"] / rates["sbi"], ".2f"),
                fmt(per, ",.0f"),
            ]
        )
        records.append({"task": task_name, "observations": observations, "n": n, "rates": rates})

    reference = task.reference_posterior(x_o, args.c2st_samples, random_state=0)
    scores = {}
    for name, (n, samples) in samples_for_c2st.items():
        samples = np.asarray(samples)
        if n < args.c2st_samples:  # too few samples: draw the C2ST set on its own
            if name == "per_sample":
                samples = per_sample_scheme(estimator, x_o, args.c2st_samples, 0)
            else:
                samples = draw(name, fitted[name], x_o, args.c2st_samples, 0)
        scores[name] = c2st(reference, samples[: args.c2st_samples])
    log(f"[sampling] {task_name}: C2ST on one observation: {scores}")
    return rows, records, scores, size


def bench_sampling(args, models):
    rows, records, notes = [], [], []
    for task_name in args.tasks:
        task_rows, task_records, scores, size = sampling_rates(args, task_name, models)
        rows += task_rows
        records.append({"task": task_name, "rates": task_records, "c2st": scores})
        notes.append(
            f"{task_name} "
            + ", ".join(f"{name} {fmt(score, '.3f')}" for name, score in scores.items())
        )
    table = markdown(
        [
            "task",
            "observations",
            "samples each",
            "skfalcon samples/s",
            "sbi samples/s",
            "skfalcon / sbi",
            f"per-sample scheme ({PER_SAMPLE_CANDIDATES}) samples/s",
        ],
        rows,
    )
    table += (
        f"\n\nC2ST on one observation ({args.c2st_samples:,} samples; models fitted on "
        f"{min(args.sizes):,} simulations): " + "; ".join(notes) + "."
    )
    return table, records


# ----------------------------------------------------------------------- 3. log_prob


def log_prob_rates(args, task_name, models):
    """``log_prob`` pairs per second of both methods on one task, for one observation and
    for many, each after a first call that computes (and caches) the normalizers."""
    task, _, fitted = fitted_models(args, models, task_name)
    estimator, posterior = fitted["skfalcon"], fitted["sbi"]
    n = args.log_prob_pairs
    theta = task.sample_prior(n, random_state=2)
    x_o = task.observations(1)[1][0]
    n_obs = min(args.n_observations, n)
    per_obs = n // n_obs
    xs = task.observations(n_obs, random_state=1)[1]
    # Observation-major pairs for skfalcon; sbi's batched call takes (per_obs, n_obs, d).
    theta_many = theta[: per_obs * n_obs]
    theta_batched = torch.as_tensor(
        theta_many.reshape(n_obs, per_obs, -1).transpose(1, 0, 2), dtype=torch.float32
    )
    x_batched = torch.as_tensor(xs, dtype=torch.float32)
    xs_pairs = np.repeat(xs, per_obs, axis=0)

    with Stopwatch() as watch:
        estimator.log_prob(theta[:1], x_o)
    z_one = watch.wall
    with Stopwatch() as watch:
        estimator.log_prob(theta_many[::per_obs], xs)
    z_many = watch.wall
    theta_t = torch.as_tensor(theta, dtype=torch.float32)
    x_t = torch.as_tensor(x_o, dtype=torch.float32)
    calls = {
        ("1", "skfalcon"): lambda k: estimator.log_prob(theta, x_o),
        ("1", "sbi"): lambda k: posterior.log_prob(theta_t, x=x_t),
        ("many", "skfalcon"): lambda k: estimator.log_prob(theta_many, xs_pairs),
        # sbi's batched call re-estimates every observation's leakage by rejection
        # sampling on each call; unnormalized, it times the flow alone (a lower bound).
        ("many", "sbi"): lambda k: posterior.log_prob_batched(
            theta_batched, x=x_batched, norm_posterior=False
        ),
    }
    rates = {}
    with torch.no_grad():
        for (case, name), call in calls.items():
            call(0)  # sbi's leakage correction of one observation, computed once
            count = n if case == "1" else per_obs * n_obs
            rates[case, name] = count / timed_draws(call, args.sample_repeats)[0]
    rows = [
        [
            task_name,
            label,
            f"{n if case == '1' else per_obs * n_obs:,}",
            fmt(rates[case, "skfalcon"], ",.0f"),
            fmt(z, ".2f"),
            fmt(rates[case, "sbi"], ",.0f"),
            fmt(rates[case, "skfalcon"] / rates[case, "sbi"], ".2f"),
        ]
        for case, label, z in (("1", "1", z_one), ("many", f"{n_obs:,}", z_many))
    ]
    log(f"[log_prob] {rows}")
    return rows, {f"{case} {name}": rate for (case, name), rate in rates.items()}


def bench_log_prob(args, models):
    rows, records = [], {}
    for task_name in args.tasks:
        task_rows, records[task_name] = log_prob_rates(args, task_name, models)
        rows += task_rows
    table = markdown(
        [
            "task",
            "observations",
            "pairs",
            "skfalcon pairs/s (Z cached)",
            "Z(x) once, s",
            "sbi pairs/s (many: unnormalized)",
            "skfalcon / sbi",
        ],
        rows,
    )
    return table, records


# ------------------------------------------------------------------------- 4. memory


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux), MiB; None where there is none."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc, else psutil)."""
    rss = _proc_status_mib("VmRSS")
    if rss is None:
        import psutil

        rss = psutil.Process().memory_info().rss / 2**20
    return rss


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` of a process started by ``subprocess``
    keeps the parent's resident size at the fork, so it overstates a small child's peak.
    """
    peak = _proc_status_mib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / KiB
    return peak


# The network of the memory section unless --memory-network default: small, so that two
# epochs over 10^6 rows take a minute or so; the data path does not depend on it.
SMALL_NETWORK = {"num_transforms": 1, "hidden_features": (32, 32)}


def memory_child(n, epochs, network):
    """Fit on ``n`` simulations of the 10-D Gaussian linear task; print a JSON record."""
    from skfalcon import FlowPosteriorEstimator

    torch.set_num_threads(1)
    task = TASKS["gaussian_linear"]()
    rss_start = rss_mib()
    theta, x = simulations(task, n)
    rss_data = rss_mib()
    samples, done = [], threading.Event()

    def poll():  # RSS over time, to tell the epochs apart
        while not done.is_set():
            samples.append((time.perf_counter(), rss_mib()))
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    estimator = FlowPosteriorEstimator(
        prior=task.prior,
        max_epochs=epochs,
        random_state=0,
        **(SMALL_NETWORK if network == "small" else {}),
    )
    thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are capped on purpose
        estimator.fit(theta, x)
    end = time.perf_counter()
    done.set()
    thread.join()
    # Epoch windows, counted back from the end of the fit (history_ times each epoch).
    bounds, t = [], end
    for record in reversed(estimator.history_):
        bounds.append((t - record["seconds"], t))
        t -= record["seconds"]
    bounds.reverse()
    per_epoch = [max((r for s, r in samples if a <= s <= b), default=None) for a, b in bounds]
    print(
        json.dumps(
            {
                "n": n,
                "epochs": len(estimator.history_),
                "data_mib": (theta.nbytes + x.nbytes) / 2**20,
                "rss_start_mib": rss_start,
                "rss_data_mib": rss_data,
                "rss_before_training_mib": max((r for s, r in samples if s < t), default=None),
                "peak_rss_mib": peak_rss_mib(),
                "peak_rss_per_epoch_mib": per_epoch,
                "epoch_seconds": [r["seconds"] for r in estimator.history_],
            }
        )
    )


def run_child(arguments, pythonpath=None):
    """Run this script in a subprocess with one torch thread; returns its JSON record."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, str(HERE)])
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {arguments} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_memory(args):
    record = run_child(
        [
            "--child",
            "memory",
            str(args.memory_simulations),
            str(args.memory_epochs),
            args.memory_network,
        ]
    )
    log(f"[memory] {record}")
    per_epoch = ", ".join(fmt(v, ".0f") for v in record["peak_rss_per_epoch_mib"])
    table = markdown(
        [
            "simulations (10-D)",
            "network",
            "epochs",
            "s per epoch",
            "data theta + x, float64 MiB",
            "RSS after imports MiB",
            "RSS with data MiB",
            "max RSS while preparing the fit MiB",
            "peak RSS per epoch MiB",
            "peak RSS MiB",
        ],
        [
            [
                f"{record['n']:,}",
                args.memory_network,
                record["epochs"],
                ", ".join(fmt(v, ".0f") for v in record["epoch_seconds"]),
                fmt(record["data_mib"], ".0f"),
                fmt(record["rss_start_mib"], ".0f"),
                fmt(record["rss_data_mib"], ".0f"),
                fmt(record["rss_before_training_mib"], ".0f"),
                per_epoch,
                fmt(record["peak_rss_mib"], ".0f"),
            ]
        ],
    )
    return table, record


# ------------------------------------------------------------------------ 5. profile


def profile_stages(task_name, n):
    """cProfile of one epoch, grouped by stage of the training step."""
    from torch.profiler import ProfilerActivity, profile

    from skfalcon import FlowPosteriorEstimator

    task = TASKS[task_name]()
    theta, x = simulations(task, n)
    estimator = FlowPosteriorEstimator(prior=task.prior, max_epochs=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(theta, x)  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        estimator.fit(theta, x)
        profiler.disable()
        with profile(activities=[ProfilerActivity.CPU]) as torch_profile:
            estimator.fit(theta, x)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = max(t[3] for t in stats.stats.values())  # cumulative time of the outermost call
    stages = {
        "forward: flow log-densities (losses)": ("posterior.py", "losses"),
        "backward": ("graph.py", "_engine_run_backward"),
        "optimizer step (AdamW)": ("optimizer.py", "wrapper"),
        "validation losses": ("training.py", "_mean_losses"),
        "best-weights copy (deepcopy of state_dict)": ("copy.py", "deepcopy"),
        "data validation and cube map (fit)": ("_training_data.py", "check_training_data"),
    }
    rows = []
    for label, (filename, function) in stages.items():
        seconds = max(
            (
                t[3]
                for (file, _, name), t in stats.stats.items()
                if file.endswith(filename) and name == function
            ),
            default=0.0,
        )
        rows.append([label, fmt(seconds, ".3f"), fmt(100 * seconds / total, ".0f")])
    rows.append(["whole fit (one epoch)", fmt(total, ".3f"), "100"])
    ops = torch_profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return markdown(["stage", "s", "%"], rows), ops


def inference_chunks(args, models):
    """Sampling and log_prob with the rows per forward pass of before and after the change
    to 2**14 rows on the CPU, in this process, on one fitted model, repeats interleaved."""
    import skfalcon.engine.inference as facade

    if not hasattr(facade, "_INFERENCE_ROWS"):
        return None, None
    task, _, fitted = fitted_models(args, models, args.sample_task)
    estimator = fitted["skfalcon"]
    x_o = task.observations(1)[1][0]
    n = args.chunk_samples
    theta = task.sample_prior(n, random_state=3)
    estimator.log_prob(theta[:1], x_o)  # Z(x) cached outside the timings
    cases = {
        # label: (call, rows before: 2**18 exact draws, log_prob in one pass, 2**16 pools)
        f"sample, {n:,} exact draws": (lambda: estimator.sample(x_o, n, random_state=0), 2**18),
        f"log_prob, {n:,} pairs": (lambda: estimator.log_prob(theta, x_o), max(n, 2**18)),
        f"sample_proposal, {n // 10:,} (importance sampling)": (
            lambda: estimator.sample_proposal(x_o, n // 10, random_state=0),
            2**16,
        ),
    }
    after_rows = dict(facade._INFERENCE_ROWS)
    rows, record = [], {}
    for label, (call, before_rows) in cases.items():
        times = {"before": [], "after": []}
        for repeat in range(args.sample_repeats):
            order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
            for name in order:
                facade._INFERENCE_ROWS["cpu"] = (
                    before_rows if name == "before" else after_rows["cpu"]
                )
                try:
                    times[name].append(timed_draws(lambda k, call=call: call(), 1)[0])
                finally:
                    facade._INFERENCE_ROWS.update(after_rows)
        before, after = median(times["before"]), median(times["after"])
        count = n // 10 if label.startswith("sample_proposal") else n
        rows.append(
            [
                label,
                f"{before_rows:,}",
                f"{after_rows['cpu']:,}",
                fmt(count / before, ",.0f"),
                fmt(count / after, ",.0f"),
                fmt(before / after, ".2f"),
            ]
        )
        record[label] = times
        log(f"[profile] {label}: {times}")
    table = markdown(
        ["call", "rows per pass before", "after", "per s before", "per s after", "speed-up"],
        rows,
    )
    return table, record


def bench_profile(args, models):
    task_name, n = args.profile_task, args.profile_simulations
    stage_table, ops = profile_stages(task_name, n)
    log(f"[profile] stages of one epoch ({task_name}, n={n:,}):\n{stage_table}")
    table = (
        f"One epoch of a default fit, {task_name}, {n:,} simulations (cProfile, cumulative):"
        f"\n\n{stage_table}\n\nThe same epoch by operator (torch.profiler, top 12 by self "
        f"CPU time):\n\n```\n{ops}\n```"
    )
    chunks, record = inference_chunks(args, models)
    if chunks is not None:
        table += (
            f"\n\nInference in chunks of rows, before and after, {args.sample_task}, same "
            f"model and process, median of {args.sample_repeats} interleaved repeats:\n\n" + chunks
        )
    return table, {"stages": stage_table, "inference_chunks": record}


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS)[::-1])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="fit sizes")
    parser.add_argument("--repeats", type=int, default=None, help="fit repeats per method")
    parser.add_argument(
        "--c2st-max-size", type=int, default=10_000, help="C2ST of fits up to this many simulations"
    )
    parser.add_argument("--c2st-samples", type=int, default=None)
    parser.add_argument(
        "--sample-task",
        choices=sorted(TASKS),
        default="two_moons",
        help="task of the per-sample scheme's timings and of the chunk timings",
    )
    parser.add_argument("--sample-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument(
        "--per-sample-max",
        type=int,
        default=None,
        help="largest draw timed with the per-sample scheme (it is slow)",
    )
    parser.add_argument("--n-observations", type=int, default=None)
    parser.add_argument("--samples-per-observation", type=int, default=None)
    parser.add_argument("--log-prob-pairs", type=int, default=None)
    parser.add_argument("--memory-simulations", type=int, default=None)
    parser.add_argument("--memory-epochs", type=int, default=2)
    parser.add_argument(
        "--memory-network",
        choices=("small", "default"),
        default="small",
        help="network of the memory fit: small (1 transform, 32 hidden units) or the default",
    )
    parser.add_argument("--profile-task", choices=sorted(TASKS), default="two_moons")
    parser.add_argument("--profile-simulations", type=int, default=10_000)
    parser.add_argument(
        "--chunk-samples", type=int, default=None, help="draws and pairs of the chunk timings"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with small sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the results")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "sizes": [1000] if quick else [10_000, 100_000],
        "repeats": 1 if quick else 3,
        "c2st_samples": 1000 if quick else 5000,
        "sample_sizes": [10**3, 10**4] if quick else [10**4, 10**5, 10**6],
        "per_sample_max": 10**3 if quick else 10**4,
        "n_observations": 100 if quick else 1000,
        "samples_per_observation": 100 if quick else 1000,
        "log_prob_pairs": 10**4 if quick else 10**5,
        "memory_simulations": 10**5 if quick else 10**6,
        "chunk_samples": 10**4 if quick else 10**5,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if quick:
        args.memory_epochs, args.profile_simulations = 1, 2000
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        kind, *rest = args.child
        memory_child(int(rest[0]), int(rest[1]), rest[2])
        return
    check_importable(METHODS)
    torch.set_num_threads(args.threads)
    import_optimizer_machinery()
    log(
        f"torch.set_num_threads({args.threads}), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}; load average {os.getloadavg()[0]:.1f} on "
        f"{n_cores()} cores; skfalcon from {skfalcon.__file__}"
    )
    models, tables, record = {}, {}, {"arguments": vars(args)}
    titles = {
        "fit": "Fit time at default hyperparameters (median wall s), C2ST on one observation",
        "sampling": "Posterior sampling throughput",
        "log_prob": "log_prob throughput",
        "memory": "Peak memory of a fit",
        "profile": "One epoch profiled",
    }
    runners = {
        "fit": lambda: bench_fit(args, models),
        "sampling": lambda: bench_sampling(args, models),
        "log_prob": lambda: bench_log_prob(args, models),
        "memory": lambda: bench_memory(args),
        "profile": lambda: bench_profile(args, models),
    }
    for section in SECTIONS:
        if section not in args.sections:
            continue
        start = time.perf_counter()
        tables[section], record[section] = runners[section]()
        log(f"[{section}] done in {time.perf_counter() - start:.0f} s")
        print(f"\n### {titles[section]}\n\n{tables[section]}\n", flush=True)

    record["environment"] = {
        "platform": platform.platform(),
        "cpu_cores": n_cores(),
        "torch_threads": args.threads,
        "load_average_at_end": os.getloadavg(),
        "versions": {"skfalcon": skfalcon.__version__, "torch": torch.__version__},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"speed-{stamp}.md").write_text(
        "\n\n".join(f"### {titles[s]}\n\n{t}" for s, t in tables.items()) + "\n"
    )
    (out / f"speed-{stamp}.json").write_text(json.dumps(record, indent=2, default=str))
    log(f"results written to {out}/speed-{stamp}.md and .json")


if __name__ == "__main__":
    main()
