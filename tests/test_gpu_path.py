"""The `gpu` profile's paths, proved on a CPU: the fail-fast device check, the dry run, the
ML-1M stand-in, fp16 with a gradient scaler, the memory budget and the time estimate."""

import dataclasses
import json

import pytest
import torch

from helpers import budget, course, data, datasets, modelcache, profile, registry
from helpers import train as train_module
from helpers.train import TrainConfig, optimizer_step, train
from test_train import successor_split, tiny_sasrec

T4 = 15 * 10**9  # bytes on a Tesla T4
GB = 10**9


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(profile.DRY_RUN_ENV, raising=False)
    return tmp_path / "results"


# ---------------------------------------------------------------- fail fast on the wrong device
def test_gpu_profile_without_cuda_stops_in_the_first_cell_saying_what_to_do(results, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(profile.ENV_VAR, "gpu")
    with pytest.raises(course.NoGPU, match=r"Runtime > Change runtime type.*COURSE_PROFILE=cpu"):
        course.setup("04_bert4rec")
    assert not results.exists()  # stopped before anything ran or was recorded


def test_a_cpu_runtime_picks_the_cpu_profile_and_says_so(results, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(profile.ENV_VAR, raising=False)
    assert course.setup("01_data_cleaning").profile.name == "cpu"
    assert "no GPU found, so profile cpu (on Colab, Runtime > Change runtime type" in capsys.readouterr().out


def test_an_explicit_profile_on_a_cpu_is_not_called_picked(results, monkeypatch, capsys):
    monkeypatch.setenv(profile.ENV_VAR, "ci")
    course.setup("01_data_cleaning")
    assert "no GPU found" not in capsys.readouterr().out


# ---------------------------------------------------------------- the dry run
CODE_PATH_FIELDS = ("max_len", "hidden", "n_layers", "n_heads", "datasets", "text_max_tokens", "eval_batch_size",
                    "text_model", "compare_models", "dp_epsilons",
                    "online_eval_events", "max_steps", "valid_users", "seed_models", "seed_dataset", "rerank_k")


def test_the_dry_run_keeps_what_decides_the_code_and_cuts_what_decides_the_time(monkeypatch):
    monkeypatch.setenv(profile.DRY_RUN_ENV, "1")
    gpu, dry = profile.PROFILES["gpu"], profile.get_profile("gpu")
    kept = [f for f in CODE_PATH_FIELDS if f != "rerank_k"]
    assert {f: getattr(dry, f) for f in kept} == {f: getattr(gpu, f) for f in kept}
    assert dry.name == "gpu" and dry.dry_run and dry.amp is None  # autocast as on a CPU: off
    assert dry.max_users == 40 and dry.epochs == 1 and dry.finetune_steps == 2 and dry.online_periods == 3
    cut = {f.name for f in dataclasses.fields(profile.Profile)} & set(profile.DRY_RUN_CUTS)
    assert not cut & set(kept)
    monkeypatch.setenv(profile.DRY_RUN_ENV, "amp")
    assert profile.get_profile("gpu") == dataclasses.replace(dry, amp=True)
    monkeypatch.setenv(profile.DRY_RUN_ENV, "0")
    assert profile.get_profile("gpu") == gpu


def test_a_dry_run_never_writes_the_real_gpu_results(results, monkeypatch, capsys):
    monkeypatch.setenv(profile.ENV_VAR, "gpu")
    monkeypatch.setenv(profile.DRY_RUN_ENV, "1")
    monkeypatch.setattr(budget, "measure_flops", lambda p, device: 1e10)
    session = course.setup("07_evaluation_and_comparison")
    assert session.device.type == "cpu" and session.profile.name == "gpu"
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "gpu-dry-run/" in out and "hours for profile gpu on this CPU" in out
    course.record("sasrec/ndcg@10", 0.5)
    stored = json.loads((results / "gpu-dry-run" / "07_evaluation_and_comparison.json").read_text())
    assert stored["profile"] == "gpu" and stored["dry_run"] is True
    assert not (results / "gpu").exists()
    assert course.load_results("07_evaluation_and_comparison", "gpu")["values"] == {"sasrec/ndcg@10": 0.5}


def test_a_dry_run_model_never_takes_a_gpu_models_cache_entry(monkeypatch):
    s = successor_split()
    real = registry.configs("sasrec", s.n_items, profile.PROFILES["gpu"])
    monkeypatch.setenv(profile.DRY_RUN_ENV, "1")
    dry = registry.configs("sasrec", s.n_items, profile.get_profile("gpu"))
    modules = (registry.sasrec,)
    assert modelcache.entry_path(modelcache.cache_key("sasrec", *dry, s, modules)) != \
        modelcache.entry_path(modelcache.cache_key("sasrec", *real, s, modules))
    assert dry[0].max_len == real[0].max_len == 200 and dry[0].hidden == real[0].hidden == 128


# ---------------------------------------------------------------- ML-1M through its real loader
def test_the_ml1m_stand_in_is_pinned_and_read_by_the_ml1m_loader(tmp_path, monkeypatch):
    spec = datasets.get_spec("ml-1m-dryrun")
    spec.make(tmp_path / "a")
    spec.make(tmp_path / "b")
    for rel, sha in spec.files.items():  # the same bytes on every machine, as pinned
        assert datasets.file_sha256(tmp_path / "a" / rel) == datasets.file_sha256(tmp_path / "b" / rel) == sha
    assert (tmp_path / "a/ml-1m-dryrun/ratings.dat").read_text().splitlines()[0].count("::") == 3
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv(profile.DRY_RUN_ENV, "1")
    assert datasets.get_spec("ml-1m").kind == "ml-1m" and datasets.get_spec("ml-1m").name == "ml-1m-dryrun"
    log = data.load_interactions("ml-1m")  # written into the cache, checked, then parsed as ML-1M
    assert log.attrs["dataset"] == "ml-1m" and log.attrs["malformed"] == 0
    assert list(log.columns) == ["user_id", "item_id", "timestamp", "rating"]
    lengths = log.groupby("user_id").size()
    assert lengths.min() >= 20 and lengths.max() > 200  # a 200-item window is cut, as on the real file
    assert not log.duplicated(["user_id", "item_id"]).any()
    items = data.load_items("ml-1m")
    assert "Amélie" in set(items["title"]) and items["year"].notna().all()
    monkeypatch.delenv(profile.DRY_RUN_ENV)
    assert datasets.get_spec("ml-1m").name == "ml-1m"  # outside a dry run: the real download


# ---------------------------------------------------------------- fp16 and the gradient scaler
def test_a_card_without_bf16_gets_fp16_and_a_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a T4
    assert train_module.amp_dtype(None, torch.device("cuda")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # an A100
    assert train_module.amp_dtype(None, torch.device("cuda")) is torch.bfloat16
    assert train_module.amp_dtype(None, torch.device("cpu")) is None


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.MODELS[n].neural])
def test_every_registered_model_trains_under_bf16_autocast(name):
    """What the gpu profile's autocast does to each model, at its window and width (toy data)."""
    gpu = profile.PROFILES["gpu"]
    small = dataclasses.replace(gpu, max_len=12, epochs=1, batch_size=32, eval_batch_size=64, amp=True)
    model = registry.fit(name, successor_split(), small, cache=False, progress=False)
    assert model.train_result.stopped == "epochs"
    assert torch.isfinite(torch.tensor(model.train_result.history["loss"].to_numpy())).all()


def _two_steps(scaler, gradient_scale: float = 1.0):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = gradient_scale * layer(torch.ones(2, 3)).pow(2).sum()
    optimizer_step(loss, optimizer, scaler, layer.parameters(), grad_clip=0.5)
    return layer


def test_the_scaled_step_equals_the_plain_step_and_skips_an_overflow():
    plain = _two_steps(torch.amp.GradScaler("cpu", enabled=False))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled = _two_steps(scaler)
    assert torch.allclose(plain.weight, scaled.weight) and torch.allclose(plain.bias, scaled.bias)
    assert scaler.get_scale() == 2.0**16  # no overflow: the scale stays (it grows after 2,000 steps)
    untouched = _two_steps(torch.amp.GradScaler("cpu", enabled=False), 0.0)  # the initial weights
    overflow = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    skipped = _two_steps(overflow, float("inf"))
    assert torch.equal(skipped.weight, untouched.weight)  # an overflowing step is skipped ...
    assert overflow.get_scale() == 2.0**15  # ... and the scale halved


def test_train_takes_the_fp16_scaler_branch_a_t4_takes(monkeypatch):
    monkeypatch.setattr(train_module, "amp_dtype", lambda amp, device: torch.float16)  # CUDA without bf16
    scalers = []
    real_step = train_module.optimizer_step

    def spy(loss, optimizer, scaler, params, grad_clip):
        scalers.append((scaler.is_enabled(), scaler.get_scale()))
        return real_step(loss, optimizer, scaler, params, grad_clip)

    monkeypatch.setattr(train_module, "optimizer_step", spy)
    result = train(tiny_sasrec(dropout=0.0), successor_split(),
                   TrainConfig(epochs=2, batch_size=16, max_len=8, lr=1e-2), progress=False)
    assert scalers and all(enabled for enabled, _ in scalers) and scalers[0][1] == 2.0**16
    assert torch.isfinite(torch.tensor(result.history["loss"].to_numpy())).all()


# ---------------------------------------------------------------- memory
def test_training_bytes_by_hand():
    shape = budget.Shape(n_items=9, max_len=4, hidden=8, n_layers=1, n_heads=2)
    params = (10 + 4) * 8 + (12 * 64 + 13 * 8) + 16  # tables, one block, the final LayerNorm
    assert shape.params == params
    layers = 34 * 6 * 8 + 5 * 2 * 6 * 4  # 16-bit activations of N = 6 positions
    logits = 6 * 10 * (2 * 2 + 12)
    assert budget.train_bytes(shape, 6, amp=True) == 16 * params + layers + logits
    assert budget.train_bytes(shape, 6, amp=False) == 16 * params + 2 * layers + 6 * 10 * (2 * 4 + 12)


@pytest.mark.parametrize("dataset", ["ml-1m", "beauty"])
def test_the_gpu_profile_fits_a_t4(dataset):
    gpu = profile.PROFILES["gpu"]
    shape = budget.Shape.of(gpu, budget.DATA_SIZES[dataset][2])
    full_windows = gpu.batch_size * gpu.max_len  # every row a full 200-item window: the worst batch
    budget.check_training(shape, full_windows, int(budget.MEMORY_SHARE * T4))
    assert budget.largest_batch(lambda b: budget.eval_bytes(shape, b), gpu.eval_batch_size,
                                int(budget.MEMORY_SHARE * T4), "evaluation") == gpu.eval_batch_size


def test_a_batch_that_cannot_fit_is_refused_with_the_size_that_would():
    shape = budget.Shape.of(profile.PROFILES["gpu"], budget.DATA_SIZES["beauty"][2])
    with pytest.raises(budget.MemoryBudgetError, match=r"needs about 9\.\d GiB.*about 25,600 positions would fit"):
        budget.check_training(shape, 256 * 200, 6 * GB)
    assert budget.largest_batch(lambda b: budget.eval_bytes(shape, b), 2048, GB, "evaluation") == 512
    with pytest.raises(budget.MemoryBudgetError, match="single row"):
        budget.largest_batch(lambda b: budget.eval_bytes(shape, b), 2048, 10**6, "evaluation")


def test_train_on_a_small_gpu_refuses_before_the_first_step_and_cuts_validation(monkeypatch):
    monkeypatch.setattr(budget, "device_budget", lambda device: 10**5)  # a 'GPU' with 100 kB free
    with pytest.raises(budget.MemoryBudgetError, match="training batch"):
        train(tiny_sasrec(), successor_split(), TrainConfig(epochs=1, batch_size=16, max_len=8), progress=False)
    model = tiny_sasrec()
    shape = budget.Shape.of(model.config)
    room = budget.train_bytes(shape, 16 * 8, amp=False) + 1  # no autocast on a CPU
    monkeypatch.setattr(budget, "device_budget", lambda device: room)
    seen = []
    monkeypatch.setattr(train_module, "_validate", lambda m, e, n, config: seen.append(config.eval_batch_size)
                        or {"hr@10": 0.0, "ndcg@10": 0.0})
    train(model, successor_split(), TrainConfig(epochs=1, batch_size=16, max_len=8, eval_batch_size=4096),
          progress=False)
    assert seen and seen[0] < 4096 and budget.eval_bytes(shape, seen[0]) <= room


def test_a_cuda_out_of_memory_becomes_a_clear_error(monkeypatch):
    model = tiny_sasrec()

    def forward(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(budget.MemoryBudgetError, match=r"ran out of memory.*Restart session.*Tried to allocate"):
        train(model, successor_split(), TrainConfig(epochs=1, batch_size=16, max_len=8), progress=False)


# ---------------------------------------------------------------- time
def test_notebook_flops_by_hand(monkeypatch):
    monkeypatch.setitem(budget.PLANS, "99_toy", (budget.Training("ml-100k", count=2),))
    p = profile.Profile(name="toy", max_users=None, max_len=50, epochs=3, batch_size=8, eval_batch_size=8,
                        hidden=8, n_layers=1, n_heads=1, dropout=0.0, lr=1e-3, patience=1, n_bootstrap=10,
                        datasets=("ml-100k",))
    users, interactions, items = budget.DATA_SIZES["ml-100k"]
    width = 50  # 100,000 / 943 = 106 items a user, cut to the window
    forward = 2 * interactions * 12 * 64 + 4 * interactions * width * 8 + 2 * interactions * 8 * (items + 1)
    valid = 2 * users * width * 12 * 64 + 4 * users * width * width * 8 + 2 * users * 8 * (items + 1)
    assert budget.notebook_flops("99_toy", p) == pytest.approx(2 * 3 * (3 * forward + valid))
    assert budget.estimate_minutes("99_toy", p, 1e9) == pytest.approx(
        budget.OVERHEAD * 2 * 3 * (3 * forward + valid) / 1e9 / 60)


def test_every_notebook_has_a_plan_and_the_gpu_profile_costs_more_than_cpu():
    notebooks = sorted(p.stem for p in course.checkout_root().glob("notebooks/0[1-9]_*.ipynb"))
    assert set(notebooks) <= set(budget.PLANS)
    gpu, cpu = profile.PROFILES["gpu"], profile.PROFILES["cpu"]
    for name in notebooks[1:]:
        assert budget.notebook_flops(name, gpu) > budget.notebook_flops(name, cpu)


def test_throughput_is_measured_once_per_device(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(budget, "_time_steps", lambda p, device, rows, repeats: calls.append(rows) or 2e9)
    ci = profile.PROFILES["ci"]
    assert budget.measure_flops(ci, torch.device("cpu")) == budget.measure_flops(ci, torch.device("cpu")) == 2e9
    assert calls == [4] and (tmp_path / "throughput.json").is_file()


def test_a_real_measurement_is_a_positive_rate():
    assert budget._time_steps(profile.PROFILES["ci"], torch.device("cpu"), rows=2, repeats=1) > 0
