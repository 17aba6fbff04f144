"""Knowledge distillation against a NumPy reference written from Hinton, Vinyals and Dean,
"Distilling the Knowledge in a Neural Network" (NIPS 2014 Deep Learning Workshop, arXiv 1503.02531),
§2: soft targets p = softmax(z_t/T), the student's q = softmax(z_s/T), the soft loss scaled by T²
"since the magnitudes of the gradients produced by the soft targets scale as 1/T²", mixed with the
hard-label cross entropy:

    L = α·CE(y, softmax(z_s)) + (1 − α)·T²·KL(p ‖ q),   ∂L/∂z_s = α·(softmax(z_s) − y) + (1 − α)·T·(q − p)

per example, averaged over the batch's weighted examples (padding has weight 0). The teacher
gets no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from . import _reference_b as ref

CASES = [(0.5, 4.0), (0.1, 2.0), (1.0, 3.0), (0.0, 1.0)]


def _value_and_grad(*args):
    from bnnx.train.losses import distillation_loss

    return jax.value_and_grad(distillation_loss)(*args)


VALUE_AND_GRAD = jax.jit(_value_and_grad)  # α and T traced: one compile for every case


def kd_reference(student, teacher, labels, weights, alpha, temperature):
    """The loss value and its gradient w.r.t. the student logits."""
    p, q = ref.softmax(teacher / temperature), ref.softmax(student / temperature)
    ce, dce = ref.cross_entropy(student, labels, weights)
    total = max(weights.sum(), 1.0)
    kl = np.sum(np.sum(p * (np.log(p) - np.log(q)), -1) * weights) / total
    dkl = temperature * (q - p) * weights[:, None] / total  # T²·∂KL/∂z_s = T²·(q − p)/T
    return alpha * ce + (1 - alpha) * temperature**2 * kl, alpha * dce + (1 - alpha) * dkl


@pytest.fixture(scope="module")
def logits():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 3, (16, 10)), rng.normal(0, 3, (16, 10))
    labels = rng.integers(0, 10, 16)
    weights = np.r_[np.ones(13), np.zeros(3)]  # a padded last batch
    return student.astype(np.float32), teacher.astype(np.float32), labels, weights.astype(np.float32)


@pytest.mark.parametrize("alpha,temperature", CASES)
def test_loss_value_and_student_gradient(logits, alpha, temperature):
    student, teacher, labels, weights = logits
    value, grad = VALUE_AND_GRAD(jnp.asarray(student), jnp.asarray(teacher), labels, jnp.asarray(weights),
                                 jnp.float32(alpha), jnp.float32(temperature))
    expected, expected_grad = kd_reference(np.float64(student), np.float64(teacher), labels, np.float64(weights),
                                           alpha, temperature)
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, atol=1e-6, rtol=1e-5)
    assert np.all(np.asarray(grad)[weights == 0] == 0)


def linear_teacher(variables, images, train=False):
    return images.reshape(images.shape[0], -1) @ variables["w"]


def test_the_teacher_gets_no_gradient(logits):
    from bnnx.train.losses import Distillation

    student, _, labels, weights = logits
    images = jnp.asarray(np.random.default_rng(1).normal(size=(16, 8, 8, 1)), jnp.float32)
    loss = Distillation({"w": jnp.ones((64, 10)) * 0.1}, 0.5, 4.0, teacher_apply=linear_teacher)
    grad = jax.grad(lambda l: l(jnp.asarray(student), labels, jnp.asarray(weights), images))(loss)
    assert np.all(np.asarray(grad.teacher_variables["w"]) == 0)


def test_a_distilled_ste_step_matches_the_reference(digits):
    """One STE step of the tiny MLP under KD from a fixed linear teacher, against the reference
    MLP whose output gradient is the KD gradient above."""
    from bnnx.train.losses import Distillation

    experiment = ref.experiment(digits, "ste")
    teacher_w = np.random.default_rng(2).normal(0, 0.3, (64, 10))
    loss = Distillation({"w": jnp.asarray(teacher_w, jnp.float32)}, 0.3, 4.0, teacher_apply=linear_teacher)
    (batch, x, labels, weights), = ref.batches(experiment, 0)[:1]
    params = ref.host(experiment.state.params)
    state, _ = experiment.train_step(experiment.state, batch, loss)

    binary = (False, True, False)
    latent = params["QuantDense_1"]["kernel"]
    seen = [params["QuantDense_0"]["kernel"], ref.sign(latent), params["QuantDense_2"]["kernel"]]
    student, cache = ref.mlp_forward(params, x, seen, binary)
    _, dlogits = kd_reference(student, x @ teacher_w, labels, weights, 0.3, 4.0)
    grads = ref.mlp_backward(params, seen, cache, dlogits, binary)
    grads["QuantDense_1"]["kernel"] = grads["QuantDense_1"]["kernel"] * (np.abs(latent) <= 1.0)
    adam, lr = ref.Adam(), experiment.config.method.lr  # cosine at step 0
    for path, g in list(ref.flat_items(grads)):
        new = ref.get_leaf(params, path) - lr * adam.direction(path, g)
        ref.set_leaf(params, path, np.clip(new, -1, 1) if path[0] == "QuantDense_1" else new)
    data = ref.batches(experiment, 0)[:1]
    ref.assert_tree_close(ref.drop_constant_inputs(ref.host(state.params), data),
                          ref.drop_constant_inputs(params, data))
