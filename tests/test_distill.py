"""Knowledge distillation: the loss (bnnx/train/losses.py) and the teacher (bnnx/train/teacher.py)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.train.losses import cross_entropy, distillation_loss


def numpy_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def numpy_kd(student, teacher, labels, weights, alpha, temperature):
    """α·CE + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)), weighted mean over examples."""
    ce = -numpy_log_softmax(student)[np.arange(len(labels)), labels]
    log_p, log_q = numpy_log_softmax(teacher / temperature), numpy_log_softmax(student / temperature)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    mean = lambda v: (v * weights).sum() / weights.sum()  # noqa: E731
    return alpha * mean(ce) + (1 - alpha) * temperature**2 * mean(kl)


EXAMPLE = dict(
    student=np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.5, 3.0, -2.0], [9.0, 0.0, 0.0]], np.float32),
    teacher=np.array([[1.0, 0.0, -1.0], [3.0, -2.0, 0.5], [0.2, 2.0, 0.1], [-5.0, 5.0, 0.0]], np.float32),
    labels=np.array([0, 2, 1, 1]),
    weights=np.array([1.0, 1.0, 1.0, 0.0], np.float32),  # the last is padding
)


@pytest.mark.parametrize("alpha, temperature", [(0.5, 4.0), (0.1, 1.0), (0.0, 2.5)])
def test_loss_equals_the_formula(alpha, temperature):
    got = distillation_loss(EXAMPLE["student"], EXAMPLE["teacher"], EXAMPLE["labels"], EXAMPLE["weights"],
                            alpha, temperature)
    want = numpy_kd(EXAMPLE["student"].astype(np.float64), EXAMPLE["teacher"].astype(np.float64),
                    EXAMPLE["labels"], EXAMPLE["weights"], alpha, temperature)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_alpha_one_is_plain_cross_entropy():
    args = EXAMPLE["student"], EXAMPLE["teacher"], EXAMPLE["labels"], EXAMPLE["weights"]
    assert float(distillation_loss(*args, 1.0, 4.0)) == float(cross_entropy(args[0], args[2], args[3]))
    assert float(distillation_loss(*args, 0.5, 4.0)) != pytest.approx(float(cross_entropy(args[0], args[2], args[3])))


def test_kd_gradient_matches_the_formula():
    grad = jax.grad(lambda s: distillation_loss(s, EXAMPLE["teacher"], EXAMPLE["labels"], EXAMPLE["weights"],
                                                0.3, 2.0))(jnp.asarray(EXAMPLE["student"]))
    eps, s = 1e-4, EXAMPLE["student"].astype(np.float64)
    numeric = np.zeros_like(s)
    for i in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (numpy_kd(up, EXAMPLE["teacher"], EXAMPLE["labels"], EXAMPLE["weights"], 0.3, 2.0)
                      - numpy_kd(down, EXAMPLE["teacher"], EXAMPLE["labels"], EXAMPLE["weights"], 0.3, 2.0)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-4)
    assert np.all(np.asarray(grad)[3] == 0)  # padding gets no gradient


# ---- a teacher run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(tmp_path_factory, digits):
    from bnnx.config.compose import compose_config
    from bnnx.train.loop import train

    folder = tmp_path_factory.mktemp("distill") / "fp"
    return train(compose_config(["method=fp", "epochs=1", f"out_dir={folder}"]), dataset=digits)


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_loaded_teacher_is_the_trained_fp_model(teacher, compose, digits):
    from bnnx.train.teacher import load_teacher_loss

    loss = load_teacher_loss(compose("method=ste", f"distill.teacher={teacher.run_dir}", "distill.alpha=0.25",
                                     "distill.temperature=3"), digits)
    assert (loss.alpha, loss.temperature) == (0.25, 3.0)
    images = digits.normalize(digits.test_images)
    logits = jax.jit(lambda v: loss.teacher_apply(v, images, train=False))(loss.teacher_variables)
    correct = int(np.sum(np.asarray(jnp.argmax(logits, -1)) == digits.test_labels))
    assert correct / len(digits.test_labels) == pytest.approx(teacher.summary["test_accuracy"], abs=1e-12)
    assert not loss.teacher_variables["quant"]  # the FP twin: no quantized layer


@pytest.mark.parametrize("method", ["bop", "bnew"])  # STE: test_alpha_one_run_equals_the_plain_run
def test_students_train_with_a_teacher(teacher, run_cli, tmp_path, method):
    code, output = run_cli("train", f"method={method}", "epochs=1", f"distill.teacher={teacher.run_dir}",
                           f"out_dir={tmp_path / 'kd'}", "-q")
    assert code == 0, output
    assert np.isfinite(rows(tmp_path / "kd")[0]["train_loss"])


def test_alpha_one_run_equals_the_plain_run(teacher, run_cli, tmp_path):
    for name, extra in (("plain", []), ("alpha1", [f"distill.teacher={teacher.run_dir}", "distill.alpha=1.0"]),
                        ("kd", [f"distill.teacher={teacher.run_dir}"])):
        code, output = run_cli("train", "method=ste", "epochs=1", *extra, f"out_dir={tmp_path / name}", "-q")
        assert code == 0, output
    plain, alpha1, kd = (rows(tmp_path / name)[0] for name in ("plain", "alpha1", "kd"))
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert alpha1[key] == pytest.approx(plain[key], rel=1e-6), key
    assert kd["train_loss"] != pytest.approx(plain["train_loss"], rel=1e-3)  # the KD term is there


def edited_copy(teacher, tmp_path, edit):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(teacher.run_dir, folder)
    config = folder / "config.yaml"
    config.write_text(edit(config.read_text()))
    return folder


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("not_a_run", "not a bnnx run"),
    ("other_dataset", "trained on mnist"),
    ("other_structure", "does not match"),
    ("no_checkpoint", "no checkpoint"),
])
def test_mismatched_teacher_is_exit_2_one_line(teacher, run_cli, tmp_path, case, words):
    import shutil

    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "not_a_run":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "other_dataset":
        folder = edited_copy(teacher, tmp_path, lambda text: text.replace("name: digits", "name: mnist"))
    elif case == "other_structure":  # the config no longer describes the checkpoint's model
        folder = edited_copy(teacher, tmp_path, lambda text: text.replace("hidden:\n  - 256", "hidden:\n  - 128"))
    else:
        folder = edited_copy(teacher, tmp_path, lambda text: text)
        shutil.rmtree(folder / "checkpoints")
    code, output = run_cli("train", "method=ste", "epochs=1", f"distill.teacher={folder}",
                           f"out_dir={tmp_path / 'student'}")
    assert code == 2, output
    assert output.strip().count("\n") == 0 and output.startswith("error: distill.teacher") and words in output, output
    assert not (tmp_path / "student").exists()
