"""Shared layers against their references: the arithmetic float32 sine of Snake (jaxvoc.nn.activations.sin)
and its sin^2,
the anti-aliased activation's gradients, conv1d and its gradients."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, 1e6])
def test_sin_matches_float64_and_torch(scale):
    import jax
    import jax.numpy as jnp
    import torch

    from jaxvoc.nn.activations import sin

    x = np.random.default_rng(0).uniform(-scale, scale, 1_000_000).astype(np.float32)
    x[:4] = [0.0, -0.0, np.pi / 2, 1e-30]
    ref = np.sin(x.astype(np.float64))
    ours = np.asarray(jax.jit(sin)(jnp.asarray(x))).astype(np.float64)
    official = torch.sin(torch.from_numpy(x)).double().numpy()  # what the official Snake calls
    # float32 sines are within ~1 ulp of the true value, i.e. <= 6e-8 absolute; the reduction of this one
    # costs up to 2 ulp more (measured 1.1e-7 at |x| <= 1e6). 2e-7 fails on any wrong quadrant or coefficient.
    assert np.max(np.abs(ours - ref)) <= 2e-7
    assert np.max(np.abs(ours - official)) <= 2e-7
    assert ours[0] == 0.0 and ours[1] == 0.0 and ours[3] == np.float32(1e-30)  # sin x = x for tiny x


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, 1e5])
def test_sin_squared_matches_float64_and_torch(scale):
    """Snake's forward sin(x)^2 (reduction by pi, one polynomial) against float64 and against what the official
    Snake computes, torch.sin(x) ** 2 in float32."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxvoc.nn.activations import sin_squared

    x = np.random.default_rng(1).uniform(-scale, scale, 1_000_000).astype(np.float32)
    x[:5] = [0.0, -0.0, np.pi / 2, 1e-30, np.pi]
    ref = np.sin(x.astype(np.float64)) ** 2
    ours = np.asarray(jax.jit(sin_squared)(jnp.asarray(x))).astype(np.float64)
    official = (torch.sin(torch.from_numpy(x)) ** 2).double().numpy()
    # sin^2 <= 1, so float32 rounding of it is <= 6e-8 absolute; torch's float32 sine and square add ~1-2 ulp,
    # the reduction of |x| up to 1e5 by pi in float32 up to 2 ulp more. 3e-7 fails on any wrong coefficient
    # (the first omitted Taylor term alone is 1e-5 at pi/2) or a reduction by pi/2.
    err, err_t = np.abs(ours - ref), np.abs(official - ref)
    assert err.max() <= 3e-7 and np.abs(ours - official).max() <= 3e-7, (err.max(), err_t.max())
    # rms over the sample: measured 1.4e-8 against torch's 2.0e-8 at |x| <= 1 (no reduction), 3.6e-8 against
    # 2.7e-8 beyond (r = x - j pi is rounded once more than torch's argument; squaring the sine of
    # jaxvoc.nn.activations.sin gave 3.0e-8). 1.5x torch's fails on a coarser reduction or polynomial; the
    # binding check is the models' float64 rule (tests/test_bigvgan.py, the codec's tests).
    rms, rms_t = np.sqrt(np.mean(err ** 2)), np.sqrt(np.mean(err_t ** 2))
    assert rms <= 1.5 * rms_t, (rms, rms_t)
    tiny = ours[3]  # sin(1e-30)^2 = 1e-60 underflows to 0 in float32, as torch's
    assert ours[0] == 0.0 and ours[1] == 0.0 and tiny == float(official[3])
    xb = jnp.asarray(x[:10], jnp.bfloat16)  # other dtypes: jnp.sin squared
    assert np.array_equal(np.asarray(sin_squared(xb)), np.asarray(jnp.square(jnp.sin(xb))))


def test_sin_gradient_is_cos_and_other_dtypes_use_jnp():
    import jax
    import jax.numpy as jnp

    from jaxvoc.nn.activations import sin

    x = np.linspace(-50, 50, 100_001, dtype=np.float32)
    g = np.asarray(jax.jit(jax.vmap(jax.grad(sin)))(jnp.asarray(x))).astype(np.float64)
    assert np.max(np.abs(g - np.cos(x.astype(np.float64)))) <= 2e-7  # same bound as the sine itself
    xb = jnp.asarray(x[:10], jnp.bfloat16)
    assert sin(xb).dtype == jnp.bfloat16 and np.array_equal(np.asarray(sin(xb)), np.asarray(jnp.sin(xb)))


@pytest.mark.parametrize("beta,logscale", [(True, True), (False, False)])
def test_activation1d_gradients_match_official(beta, logscale):
    """The hand-written gradients (the polyphase FIRs' and Snake's custom VJPs) against torch autograd of the
    official anti-aliased activation, on every input: x, alpha and beta."""
    import jax
    import jax.numpy as jnp
    import torch
    from bigvgan.activations import Snake as TSnake, SnakeBeta as TSnakeBeta
    from bigvgan.alias_free_activation.torch.act import Activation1d as TActivation1d

    from jaxvoc.nn.activations import Activation1d

    B, T, C = 2, 300, 6
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    g = rng.standard_normal((B, T, C)).astype(np.float32)
    a = rng.uniform(-0.5, 0.5, C).astype(np.float32) + (0.0 if logscale else 1.0)
    b = rng.uniform(-0.5, 0.5, C).astype(np.float32) + (0.0 if logscale else 1.0)
    torch.manual_seed(0)
    act_t = (TSnakeBeta if beta else TSnake)(C, alpha_logscale=logscale)
    with torch.no_grad():
        act_t.alpha.copy_(torch.from_numpy(a))
        if beta:
            act_t.beta.copy_(torch.from_numpy(b))
    mod_t = TActivation1d(act_t)
    xt = torch.from_numpy(x.transpose(0, 2, 1).copy()).requires_grad_(True)
    mod_t(xt).backward(torch.from_numpy(g.transpose(0, 2, 1).copy()))

    params = {"act": {"alpha": jnp.asarray(a), **({"beta": jnp.asarray(b)} if beta else {})}}
    act = Activation1d(beta=beta, logscale=logscale)
    _, vjp = jax.vjp(lambda p, x: act.apply({"params": p}, x), params, jnp.asarray(x))
    gp, gx = vjp(jnp.asarray(g))
    pairs = [(np.asarray(gx), xt.grad.numpy().transpose(0, 2, 1)),
             (np.asarray(gp["act"]["alpha"]), act_t.alpha.grad.numpy())]
    if beta:
        pairs.append((np.asarray(gp["act"]["beta"]), act_t.beta.grad.numpy()))
    for ours, ref in pairs:
        # float32 rounding of sums over B*T = 600 terms: ~1e-6 relative; 1e-5 fails on any wrong term
        assert np.max(np.abs(ours - ref)) <= 1e-5 * np.max(np.abs(ref)), (ours, ref)


def _official_strided_convs():
    """(name, module) of the published discriminators' strided weight-normed convolutions: MPD's (5, 1) stride
    (3, 1) (32 -> 128 channels), MRD's and CQTD's (3, 9) stride (1, 2) (32 and 128 channels; CQTD's also
    dilated (2, 1) and (4, 1) along time)."""
    from conversion.bigvgan import official_discriminators
    from experiments.reference.bigvgan_train import official_discriminator_config

    mpd, mrd = official_discriminators(official_discriminator_config("bigvgan_24khz_100band"), seed=0)
    _, cqtd = official_discriminators(official_discriminator_config("bigvgan_v2_24khz_100band_256x"), seed=0)
    picks = [("MPD convs.1", mpd.discriminators[0].convs[1]), ("MRD convs.1", mrd.discriminators[0].convs[1])]
    picks += [(f"CQTD convs.{i}", cqtd.discriminators[0].convs[i]) for i in (1, 2, 3)]
    for _, m in picks:
        assert tuple(m.stride) != (1, 1) and hasattr(m, "weight_v")
    return picks


@pytest.mark.parametrize("which", range(5))
def test_strided_conv2d_gradients_match_official(which):
    """The sub-pixel input gradient of strided 2D convolutions (jaxvoc.nn.conv.conv_nd's custom VJP; MRD, CQTD)
    and the kernel gradient beside it (MPD's layer: autodiff's, kept where sub-pixel was not faster), against torch autograd of the official discriminators' weight-normed
    convolutions: gradients to the input, weight_v, weight_g and the bias. >= 110 dB from torch float32 and the
    float64 rule as tests/test_wavlm.py's (no further from torch's float64 run than torch float32 is, 3 dB
    margin, or >= 130 dB from it): the sub-pixel input gradient sums the same products in another order, which
    for few channels lands further from float64 than torch's (8 channels: 134.8 vs 141.0 dB) and for many
    closer (128 channels: 128.5 vs 125.8 dB); python -m experiments.profile.strided_grads --ops."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxvoc.nn.conv import Conv2d
    from test_wavlm import assert_equivalent

    def module(dtype):  # the official module (built afresh: weight-normed modules cannot be deep-copied)
        name, m = _official_strided_convs()[which]
        rng = np.random.default_rng(which)
        with torch.no_grad():  # gains away from the norm, a bias: every factor of the parametrisation matters
            m.weight_g.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, m.weight_g.shape).astype(np.float32)))
            m.bias.copy_(torch.from_numpy(rng.standard_normal(m.bias.shape).astype(np.float32)))
        return name, m.to(dtype)

    name, mod = module(torch.float32)
    cout, cin, kh, kw = mod.weight_v.shape
    x = np.random.default_rng(7).standard_normal((2, cin, 37, 50)).astype(np.float32)  # ragged phase ends

    def official(m, dtype):
        xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
        y = m(xt)
        gt = torch.from_numpy(np.random.default_rng(9).standard_normal(tuple(y.shape)).astype(np.float32)).to(dtype)
        y.backward(gt)
        return [t.detach().double().numpy() for t in (xt.grad, m.weight_v.grad, m.weight_g.grad, m.bias.grad)], gt

    (ref, gt), (ref64, _) = official(mod, torch.float32), official(module(torch.float64)[1], torch.float64)
    gt = gt.float()
    conv = Conv2d(cout, (kh, kw), stride=tuple(mod.stride), dilation=tuple(mod.dilation),
                  padding=tuple(mod.padding), weight_norm=True)
    params = {"weight_v": jnp.asarray(mod.weight_v.detach().numpy().transpose(2, 3, 1, 0)),
              "weight_g": jnp.asarray(mod.weight_g.detach().numpy().reshape(1, 1, 1, cout)),
              "bias": jnp.asarray(mod.bias.detach().numpy())}
    _, vjp = jax.vjp(lambda p, xx: conv.apply({"params": p}, xx), params, jnp.asarray(x.transpose(0, 2, 3, 1)))
    gp, gx = jax.jit(vjp)(jnp.asarray(gt.numpy().transpose(0, 2, 3, 1)))
    ours = [np.asarray(gx).transpose(0, 3, 1, 2), np.asarray(gp["weight_v"]).transpose(3, 2, 0, 1),
            np.asarray(gp["weight_g"]).reshape(cout, 1, 1, 1), np.asarray(gp["bias"])]
    for what, o, r, r64 in zip(("input", "weight_v", "weight_g", "bias"), ours, ref, ref64):
        s, s64, t64 = assert_equivalent(o.astype(np.float64), r, r64, f"{name} {what}")
        print(f"{name} {what}: {s:.1f} dB vs torch float32; vs float64 {s64:.1f} dB (torch {t64:.1f} dB)")


@pytest.mark.parametrize("as_2d", [False, True])
@pytest.mark.parametrize("stride,dilation,groups,padding", [(1, 1, 1, (3, 3)), (1, 5, 1, (15, 15)),
                                                            (2, 1, 1, (0, 2)), (1, 1, 4, (1, 1))])
def test_conv1d_and_its_gradients_match_torch(stride, dilation, groups, padding, as_2d, monkeypatch):
    """conv1d in both forms (1-D; 2-D with the 1-D form's gradients as its custom VJP) against torch's conv1d
    and its autograd, on the input and the kernel; on the CPU the 2-D form's forward goes to YNNPACK, the
    reason for it (docs/bigvgan.md#xla-cpu-options)."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxvoc.nn import conv
    from jaxvoc.nn.conv import conv1d

    monkeypatch.setattr(conv, "CONV1D_AS_2D", as_2d)

    B, T, C, O, K = 2, 200, 32, 48, 7
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    w = (rng.standard_normal((K, C // groups, O)) / np.sqrt(K * C)).astype(np.float32)

    def f(x, w):
        return conv1d(x, w, stride=stride, dilation=dilation, padding=padding, groups=groups)

    y, vjp = jax.vjp(jax.jit(f), jnp.asarray(x), jnp.asarray(w))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw = vjp(jnp.asarray(g))
    xt = torch.from_numpy(x.transpose(0, 2, 1).copy()).requires_grad_(True)
    wt = torch.from_numpy(w.transpose(2, 1, 0).copy()).requires_grad_(True)
    yt = torch.nn.functional.conv1d(torch.nn.functional.pad(xt, padding), wt, stride=stride, dilation=dilation,
                                    groups=groups)
    yt.backward(torch.from_numpy(g.transpose(0, 2, 1).copy()))
    for ours, ref in [(np.asarray(y), yt.detach().numpy().transpose(0, 2, 1)),
                      (np.asarray(gx), xt.grad.numpy().transpose(0, 2, 1)),
                      (np.asarray(gw), wt.grad.numpy().transpose(2, 1, 0))]:
        # float32 sums of up to K*C = 224 (forward, input gradient) or B*T = 400 (kernel gradient) products in
        # different orders: ~1e-6 relative; 1e-5 fails on any misplaced tap, phase or group
        assert ours.shape == ref.shape and np.max(np.abs(ours - ref)) <= 1e-5 * np.max(np.abs(ref))
    if jax.default_backend() == "cpu":
        hlo = jax.jit(f).lower(jnp.asarray(x), jnp.asarray(w)).compile().as_text()
        assert ("__ynn_fusion" in hlo) == as_2d


@pytest.mark.parametrize("length,cin,cout,stride", [(96, 256, 128, 8), (400, 64, 32, 4), (33, 16, 8, 5)])
def test_conv_transpose1d_gradients_match_torch(length, cin, cout, stride):
    """jaxvoc.nn.conv.ConvTranspose1d, weight-normed as the BigVGAN and NeMo decoders' up-sampling layers (kernel
    2 x stride, padding stride // 2 as NeMo's; with stride 5 the kernel is 11, not a multiple of the stride,
    so its phases have unequal numbers of taps), against torch autograd of ``weight_norm(torch.nn.ConvTranspose1d)``: the output and the gradients
    to the input, weight_v, weight_g and the bias, >= 110 dB from torch float32 and the float64 rule as
    tests/test_wavlm.py's (no further from torch's float64 run than torch float32 is, 3 dB margin, or >= 130 dB
    from it). The kernel gradient is the sub-pixel convolution's custom VJP (one matrix product per tap:
    jaxvoc.nn.conv.kernel_grad_by_taps), not autodiff's."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxvoc.nn.conv import ConvTranspose1d
    from test_wavlm import assert_equivalent

    kernel, pad = 2 * stride + (stride == 5), stride // 2
    rng = np.random.default_rng(length)

    def module(dtype):
        torch.manual_seed(0)
        m = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(cin, cout, kernel, stride, padding=pad))
        with torch.no_grad():  # gains away from the norm, a bias: every factor of the parametrisation matters
            m.weight_g.copy_(torch.from_numpy(np.random.default_rng(1).uniform(0.5, 2.0, m.weight_g.shape)))
            m.bias.copy_(torch.from_numpy(np.random.default_rng(2).standard_normal(cout)))
        return m.to(dtype)

    x = rng.standard_normal((2, cin, length)).astype(np.float32)
    out_len = (length - 1) * stride - 2 * pad + kernel
    gy = rng.standard_normal((2, cout, out_len)).astype(np.float32)

    def official(dtype):
        m = module(dtype)
        xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
        y = m(xt)
        y.backward(torch.from_numpy(gy).to(dtype))
        return m, [t.detach().double().numpy() for t in (y, xt.grad, m.weight_v.grad, m.weight_g.grad, m.bias.grad)]

    mod, ref = official(torch.float32)
    _, ref64 = official(torch.float64)
    conv = ConvTranspose1d(cout, kernel, stride=stride, padding=pad, weight_norm=True)
    params = {"weight_v": jnp.asarray(mod.weight_v.detach().numpy().transpose(2, 0, 1)),  # [K, Cin, Cout]
              "weight_g": jnp.asarray(mod.weight_g.detach().numpy().reshape(1, cin, 1)),
              "bias": jnp.asarray(mod.bias.detach().numpy())}
    y, vjp = jax.vjp(lambda p, xx: conv.apply({"params": p}, xx), params, jnp.asarray(x.transpose(0, 2, 1)))
    gp, gx = jax.jit(vjp)(jnp.asarray(gy.transpose(0, 2, 1)))
    ours = [np.asarray(y).transpose(0, 2, 1), np.asarray(gx).transpose(0, 2, 1),
            np.asarray(gp["weight_v"]).transpose(1, 2, 0), np.asarray(gp["weight_g"]).reshape(cin, 1, 1),
            np.asarray(gp["bias"])]
    for what, o, r, r64 in zip(("output", "input", "weight_v", "weight_g", "bias"), ours, ref, ref64):
        s, s64, t64 = assert_equivalent(o.astype(np.float64), r, r64, what)
        print(f"{what}: {s:.1f} dB vs torch float32; vs float64 {s64:.1f} dB (torch {t64:.1f} dB)")
