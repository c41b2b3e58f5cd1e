"""The Triton sampler against the torch reference: greedy, kept sets, seeded draws, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels.reference import gumbel_noise, kept_mask, philox4x32, sample_reference
from cortex.engine.kernels.sampling import kept_mask_triton


def _params(
    rows: int,
    *,
    temperature: float | list[float] = 1.0,
    top_k: int | list[int] = 0,
    top_p: float | list[float] = 1.0,
    min_p: float | list[float] = 0.0,
    seed: int | list[int] = 0,
    step: int | list[int] = 0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, ...]:
    """Per-row (temperature, top_k, top_p, min_p, seeds, steps) tensors."""

    def column(value: float | list[float] | int | list[int], dtype: torch.dtype) -> torch.Tensor:
        values = value if isinstance(value, list) else [value] * rows
        return torch.tensor(values, dtype=dtype, device=device)

    return (
        column(temperature, torch.float32),
        column(top_k, torch.int32),
        column(top_p, torch.float32),
        column(min_p, torch.float32),
        column(seed, torch.int64),
        column(step, torch.int64),
    )


def chi2_sf(statistic: float, df: int) -> float:
    """P(X > statistic) for X ~ chi-square(df): 1 - the regularised lower gamma P(df/2, x/2).

    P(a, x) = x^a e^-x / Gamma(a + 1) * sum_n x^n / ((a + 1) ... (a + n)), a series that
    converges for every x; it is summed in log space so large statistics do not overflow.
    """
    if statistic <= 0:
        return 1.0
    a, x = df / 2, statistic / 2
    log_terms, log_term = [0.0], 0.0
    for n in range(1, int(x + 30 * math.sqrt(x) + 100)):
        log_term += math.log(x / (a + n))
        log_terms.append(log_term)
    peak = max(log_terms)
    log_series = peak + math.log(math.fsum(math.exp(t - peak) for t in log_terms))
    lower = math.exp(a * math.log(x) - x - math.lgamma(a + 1) + log_series)
    return max(0.0, 1.0 - lower)


def test_chi2_sf_matches_published_critical_values() -> None:
    # Upper 0.1% critical values from NIST/SEMATECH e-Handbook of Statistical Methods,
    # section 1.3.6.7.4 "Critical Values of the Chi-Square Distribution".
    for df, critical in [(1, 10.828), (5, 20.515), (9, 27.877), (15, 37.697)]:
        assert chi2_sf(critical, df) == pytest.approx(0.001, rel=2e-3)


def test_philox_matches_the_random123_known_answer() -> None:
    zero = torch.zeros(1, dtype=torch.int64)
    words = [int(w) for w in philox4x32(zero, zero, zero, zero)]
    assert words == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]  # Random123 kat_vectors


def test_sparse_noise_equals_dense_noise() -> None:
    seeds, steps = torch.tensor([7, -3]), torch.tensor([0, 2**40 + 5])
    dense = gumbel_noise(seeds, steps, 1001)
    tokens = torch.tensor([[0, 3, 4, 1000], [999, 5, 6, 7]])
    torch.testing.assert_close(
        gumbel_noise(seeds, steps, 1001, tokens=tokens), dense.gather(1, tokens)
    )


def _logits(rows: int, vocab: int, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=gen) * 3).to(device)


def test_greedy_is_the_first_argmax(triton_kernels: None, device: torch.device) -> None:
    logits = _logits(5, 3000, 0, device)
    logits[1, 2500] = logits[1, 700] = 50.0  # a tie across vocabulary tiles: the first wins
    logits[2, :] = float("-inf")  # nothing finite: index 0
    logits[3, ::2] = float("-inf")
    params = _params(5, temperature=0.0, top_k=3, top_p=0.5, device=device)
    expected = logits.argmax(dim=-1)
    assert kernels.sample(logits, *params).tolist() == expected.tolist()
    assert sample_reference(logits, *params).tolist() == expected.tolist()
    assert expected[1] == 700 and expected[2] == 0


KEPT_CASES = [
    # temperature, top_k, top_p, min_p
    (1.0, 0, 1.0, 0.0),
    (0.7, 1, 1.0, 0.0),
    (1.0, 5, 1.0, 0.0),
    (1.3, 50, 1.0, 0.0),
    (1.0, 299, 1.0, 0.0),
    (1.0, 300, 1.0, 0.0),
    (1.0, 1000, 1.0, 0.0),
    (0.8, 0, 0.9, 0.0),
    (2.0, 0, 0.5, 0.0),
    (1.0, 0, 1e-6, 0.0),
    (1.0, 0, 0.0, 0.0),
    (1.0, 0, 1.0, 0.05),
    (0.5, 0, 1.0, 0.5),
    (1.0, 0, 1.0, 1.0),
    (0.9, 40, 0.8, 0.02),
    (1.1, 10, 0.95, 0.3),
]


def test_kept_sets_match_the_reference_exactly(triton_kernels: None, device: torch.device) -> None:
    rows, vocab = len(KEPT_CASES), 300
    # Rounded logits make many ties at the cut; some tokens are banned with -inf.
    logits = (_logits(rows, vocab, 1, device) * 2).round() / 2
    logits[::3, ::7] = float("-inf")
    temperature, top_k, top_p, min_p = (list(column) for column in zip(*KEPT_CASES, strict=True))
    params = _params(
        rows, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, device=device
    )[:4]
    got = kept_mask_triton(logits, *params)
    expected = kept_mask(logits / params[0][:, None], *params[1:])
    for row in range(rows):
        assert torch.equal(got[row], expected[row]), f"row {row}: {KEPT_CASES[row]}"
    sizes = expected.sum(dim=-1).tolist()
    assert sizes[1] == 1 and sizes[2] >= 5 and sizes[3] < sizes[0]  # the filters do cut


def test_draws_equal_the_reference(triton_kernels: None, device: torch.device) -> None:
    # The uniforms are bit-identical across backends; only log() rounding could differ, which
    # matters only at near-exact ties of logit + noise.
    rows = 48
    logits = _logits(rows, 700, 2, device)
    cases = [KEPT_CASES[i % len(KEPT_CASES)] for i in range(rows)]
    temperature, top_k, top_p, min_p = (list(column) for column in zip(*cases, strict=True))
    params = _params(
        rows,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        seed=[(i * 2654435761) % 2**63 - 2**40 for i in range(rows)],
        step=[i * 3 + (i % 4) * 2**33 for i in range(rows)],
        device=device,
    )
    out = torch.full((rows,), -1, dtype=torch.int64, device=device)
    assert kernels.sample(logits, *params, out=out) is out
    assert out.tolist() == sample_reference(logits, *params).tolist()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_a_draw_depends_only_on_seed_step_and_row(
    backend: str, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    monkeypatch.setenv("CORTEX_KERNELS", backend)
    logits = torch.zeros(6, 50, device=device)  # uniform: every token is as likely
    params = _params(6, seed=[1, 1, 1, 2, 2, 9], step=[0, 1, 2, 0, 1, 0], device=device)
    first = kernels.sample(logits, *params)
    again = kernels.sample(logits, *params)
    assert first.tolist() == again.tolist()
    # The same rows in another order, inside a bigger batch with other requests.
    order = [5, 3, 0, 4, 2, 1]
    mixed_logits = torch.cat([logits[order], _logits(3, 50, 3, device)])
    mixed = _params(
        9,
        temperature=[1.0] * 6 + [0.0, 0.7, 1.5],
        top_k=[0] * 6 + [0, 5, 0],
        seed=[[1, 1, 1, 2, 2, 9][i] for i in order] + [1, 1, 3],
        step=[[0, 1, 2, 0, 1, 0][i] for i in order] + [0, 1, 2],
        device=device,
    )
    assert kernels.sample(mixed_logits, *mixed)[:6].tolist() == first[order].tolist()
    steps = _params(40, seed=5, step=list(range(40)), device=device)
    assert len(set(kernels.sample(torch.zeros(40, 50, device=device), *steps).tolist())) > 10


def _draw_counts(backend_tokens: torch.Tensor, vocab: int) -> list[int]:
    return torch.bincount(backend_tokens.cpu(), minlength=vocab).tolist()


def _chi_square(counts: list[int], probs: torch.Tensor) -> tuple[float, int]:
    n = sum(counts)
    kept = [i for i, p in enumerate(probs.tolist()) if p > 0]
    statistic = sum((counts[i] - n * float(probs[i])) ** 2 / (n * float(probs[i])) for i in kept)
    return statistic, len(kept) - 1


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_draws_follow_the_filtered_distribution(
    backend: str, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    monkeypatch.setenv("CORTEX_KERNELS", backend)
    # The interpreter draws only tens of rows a second, so it gets fewer draws; the exact-equality
    # test above ties its draws to the reference's anyway.
    interpreted = backend == "triton" and device.type == "cpu"
    draws = 300 if interpreted else 20000
    vocab = 10
    row = _logits(1, vocab, 4, device)[0] / 2
    temperature, top_k, top_p, min_p = 0.8, 7, 0.97, 0.02
    x = (row / temperature)[None, :]
    keep = kept_mask(x, *_params(1, top_k=top_k, top_p=top_p, min_p=min_p, device=device)[1:4])
    probs = torch.softmax(torch.where(keep, x, float("-inf")), dim=-1)[0].cpu()
    logits = row.expand(draws, vocab).contiguous()
    params = _params(
        draws,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        seed=1234,
        step=list(range(draws)),
        device=device,
    )
    counts = _draw_counts(kernels.sample(logits, *params), vocab)
    assert all(c == 0 for c, p in zip(counts, probs.tolist(), strict=True) if p == 0)
    statistic, df = _chi_square(counts, probs)
    assert 3 <= df < vocab - 1  # the filters removed some tokens but not all
    assert chi2_sf(statistic, df) > 1e-3
    # The test has teeth: the same draws reject the unfiltered, untempered distribution.
    wrong = torch.softmax(row.cpu(), dim=-1)
    assert chi2_sf(_chi_square(counts, wrong)[0], vocab - 1) < 1e-3
