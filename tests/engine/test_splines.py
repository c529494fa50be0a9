"""The spline flows: zuko's splines and NSF, with the bins normalised by a faster kernel."""

import pytest
import torch
import zuko
from zuko.transforms import MonotonicRQSTransform

from skfalcon.engine.coupling import inverse_and_log_det
from skfalcon.engine.splines import NSF, RQSpline


@pytest.mark.parametrize("bins", [2, 8, 15, 16, 24])
def test_the_spline_is_zukos_in_value_inverse_log_derivative_and_gradient(bins):
    g = torch.Generator().manual_seed(bins)
    # Wide parameters reach the soft clamp of the minimum slope.
    # float64, so that the two summation orders of the softmax agree to rounding.
    phi = [
        (4 * torch.randn(300, 3, k, generator=g, dtype=torch.float64)).requires_grad_()
        for k in (bins, bins, bins - 1)
    ]
    x = 6 * torch.randn(300, 3, generator=g, dtype=torch.float64)  # some beyond [-5, 5]
    ours, zukos = RQSpline(*phi, slope=1e-3), MonotonicRQSTransform(*phi, slope=1e-3)
    for name in ("horizontal", "vertical", "derivatives"):
        torch.testing.assert_close(getattr(ours, name), getattr(zukos, name))
    y, ladj = ours.call_and_ladj(x)
    y_ref, ladj_ref = zukos.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(ladj, ladj_ref)
    torch.testing.assert_close(ours.inv(y), zukos.inv(y_ref))
    grads = torch.autograd.grad((y + ladj).sum(), phi)
    grads_ref = torch.autograd.grad((y_ref + ladj_ref).sum(), phi)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_nsf_has_zukos_weights_and_densities_and_inverts_pass_by_pass():
    torch.manual_seed(0)
    ours = NSF(3, 2, transforms=2, bins=8, hidden_features=(16, 16))
    zukos = zuko.flows.NSF(3, 2, transforms=2, bins=8, hidden_features=(16, 16))
    zukos.load_state_dict(ours.state_dict())  # the same parameters, by name and shape
    c = torch.randn(50, 2)
    theta = torch.randn(50, 3)
    torch.testing.assert_close(ours(c).log_prob(theta), zukos(c).log_prob(theta))
    z = torch.randn(50, 3)
    x, ladj = inverse_and_log_det(ours(c).transform, z)
    torch.testing.assert_close(x, zukos(c).transform.inv(z), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        ladj, zukos(c).transform.inv.log_abs_det_jacobian(z, x), rtol=1e-4, atol=1e-4
    )
