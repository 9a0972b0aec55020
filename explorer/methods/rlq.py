"""Multi-codebook (additive) quantization whose encoder is a policy trained by reinforcement
learning (Zhu, Song, Gao et al., "Revisiting Multi-Codebook Quantization"; only the supplement
is available to us: network Table 1, hyper-parameter Table 2, encoding times Table 3, ablations
Fig. 1/4). Everything below that the supplement does not state is our reconstruction, and is
labelled so: the list "Where the supplement is silent" says what we chose and why.

Model. A vector x (d,) is approximated by a sum of M full-dimensional codewords,
x ≈ x̂ = Σ_m C_m[k_m], with codebooks C (M, K, d) — additive quantization, not PQ: there are no
sub-spaces and M need not divide d. Codes are chosen sequentially, one codebook per step, as a
Markov decision process (the MDP itself is our reconstruction):

* state s_m: what the networks read, ``state="residual"`` (default) the residual
  r_m = x − Σ_{j<m} C_j[k_j] (r_0 = x), or ``state="x"`` the vector x at every step (the
  supplement: "D is the dimension of input x"), either divided by a fixed data scale;
* action k_m ∈ {0..K−1} drawn from the policy π_θm(· | s_m) (one IndepNet block per codebook,
  "IndepNet θ");
* reward ρ_m = (||r_m||² − ||r_{m+1}||²) / ||x||², the relative drop of quantization error, so
  the undiscounted return G_m = Σ_{j≥m} ρ_j = (||r_m||² − ||r_M||²) / ||x||²;
* QENet τ (one block per codebook) estimates G: ``value_head="scalar"`` (default) a value V(s_m)
  (Linear(7D, 1), our reconstruction), or ``"actions"`` Table 1's fc(7D, K) read as one
  estimate Q(s_m, k) per codeword, trained on Q(s, a) ≈ G, with V(s) = Σ_k π(k|s) Q(s, k) as the
  baseline. Table 1 gives fc(7D, K) for "every block" without saying what QENet's K outputs
  mean; the scalar head is the default because it is what PPO's value function is and its
  target is one number per transition.

Why the residual is the default state: the policy of step m must know what the codes already
chosen left to quantize; from x alone it would have to re-derive Σ_{j<m} C_j[k_j], which the
networks never see. (The distance prior below reads the residual either way.)

Training alternates (``n_iter`` stages; one resumable :class:`~explorer.events.Step` at each
stage end, and with ``log_every`` one every ``log_every`` minibatch updates within it):

1. sampling stage — the policy (dropout off) samples codes for the training set; rewards and
   returns are recorded with the codebooks used for sampling. Then the codebooks are re-solved
   by least squares given codes (the AQ/LSQ codebook update, min_C ||X − B C||² with B the
   one-hot code matrix, :func:`solve_codebooks`), for the best codes known per vector, the
   sampled ones among the candidates (``learn_from_samples``; see below). The step's losses:
   ``total`` the quantization error E = mean ||x − x̂||² after that update (Fig. 3's curve),
   and on the sampling codebooks ``sampled_mse`` (the sampled codes), ``policy_mse`` (the
   greedy policy's own codes, no ICM: Fig. 1's E) and ``greedy_mse`` (nearest-residual
   encoding, no network: what the policy has to beat). The usage histogram is the sampled codes';
2. updating stage — ``ppo_epochs`` passes over the stage's transitions in minibatches of
   ``batch_size`` (Table 2: 2000; None, the default, sizes them to the training set, see
   :meth:`RLQ._batch_size`) with the clipped policy objective (clip ε = 0.2), the clipped
   value loss (PPO2) and an entropy bonus α·H(π) (α = 0.05); gradients clipped to l2 norm 0.5;
   Adam for θ and τ with η1 = η2 = 2e-4; after every updating stage η1, η2 and α are multiplied
   by ``decay`` = 0.9999 (Table 2). Dropout 0.1 follows every layer norm and is active only in
   the updating stage. ``losses`` also carry the stage's mean ``policy`` and ``value`` losses
   and the policy ``entropy`` (nats); a step within a stage carries their running means and
   the stage's sampling-stage errors.

Encoding (``encode``): the greedy policy (argmax of π at each step, dropout off), then, with
``refinement``, ``refine_iters`` rounds of ICM as in LSQ (Martinez et al. 2018,
:func:`icm_refine`): each k_m in turn becomes the exact minimiser of
||x − Σ_{j≠m} C_j[k_j] − C_m[k]||² given the others, so refinement never increases the error.
The report's ``policy_check`` (:meth:`RLQ.extra_report`) sets the trained policy's own codes
beside the untrained network's, nearest-residual encoding and the refined codes, on the base.

Ablation switches, as the paper's Fig. 1/4 variants (each a CLI flag). The supplement names the
variants, not their mechanics; what each switch does is our reading:
  ``entropy=False``          (--no-entropy)     α = 0: no entropy regularisation;
  ``return_norm=False``      (--no-return-norm) value targets and advantages use raw returns
                                                instead of returns divided by their running std
                                                (reconstruction: PPO's reward scaling);
  ``value_correction=False`` (--no-correction)  the advantage is G − mean(G) (a constant baseline,
                                                REINFORCE) instead of G − V_τ(s) (QENet's
                                                correction; reconstruction, see below);
  ``refinement=False``       (--no-refinement)  no ICM, in training or in ``encode`` ("Ours*").
  ``advantage_norm=False``   (--no-advantage-norm) no per-minibatch advantage normalisation (ours,
                                                not the paper's: PPO practice, on by default; it
                                                rescales advantages per minibatch, so it hides most of
                                                what ``return_norm`` changes in the policy update —
                                                turn it off to see return normalisation act there).

Networks (Table 1): an IndepBlock is six layer groups lg = Linear → ReLU → LayerNorm (→ Dropout),
the outputs of groups 4, 5 and 6 concatenated and a final Linear (fc(7D, K) for the policy).
Widths d→4d→2d→d→d→2d→4d (SIFT/DEEP column, 7d concatenated) or d→d→d/2→d/4→d/4→d/2→d
(LabelMe22K column for D = 512, 7d/4 concatenated); ``layout="auto"`` takes the LabelMe22K one
for d ≥ 512 (:func:`block_layout`). ``width`` scales every hidden width (1.0 is the paper's;
0.5 by default so a CPU fit takes seconds).

Where the supplement is silent, our choices:
* state = scaled residual by default, x with ``state="x"`` (the supplement only says the networks
  take x; see "Why the residual" above); the scale is the root mean square coordinate of the
  training set, fixed at fit time;
* one policy and one value block per codebook ("Indep"), no weight sharing;
* rewards/returns as above (γ = 1); ``return_norm`` divides returns by the running std of all
  returns seen so far (Welford), as PPO's reward scaling does; advantages are then normalised
  per minibatch (zero mean, unit std), common PPO practice (``advantage_norm``);
* initialisation (``init``), so a CPU demo learns in seconds: by default codebooks by residual
  k-means (RQ: k-means on x, then on the residuals, ``init_iter`` Lloyd iterations each), or with
  ``init="joint"`` codebooks solved jointly as AQ/LSQ do (random codes, then ``init_iter``
  alternations of least squares and ICM, :func:`joint_init`; LSQ's perturbations left out).
  The two starts leave the policy very different room. RQ's codebooks are built for
  nearest-residual encoding, which stays within ~4% of the refined codes on them; jointly solved
  ones are not, and nearest-residual encoding's error is then 17–19% above the refined codes' —
  the room in which the policy learns to beat it on new vectors (see "What the policy learns"
  below). The residual start
  stays the default because it gives the better final codes: on the SIFT-like study below the
  refined codes on the base are 6–9% lower from it, and with K = 256 on few vectors per
  codeword the joint start is poor (synthetic 2,000 × 32, M = 4, K = 256, before any stage: ICM
  codes of new vectors 8.62 from it against 3.84 from residual k-means);
* ``distance_prior`` (default on): the policy's logits are the block's output plus
  −||r_m − C_m[k]||² / T_m, T_m = ``temperature`` × nearest-residual encoding's mean error after
  step m on the initial codebooks (RQ's error, from the residual start), and the
  block's last layer starts at zero — so the untrained greedy policy *is* nearest-residual
  encoding and RL learns corrections to it. ``temperature`` = 0.005 by default: sampling then stays
  close to greedy (entropy ≈ 0.02 nats), so a return measures what an action does when the
  later codebooks are chosen nearly greedily, which is how the greedy policy is used. At 0.1
  (our former default) the sampled codes' error is ~45% above greedy's and PPO improves the
  noisy policy at the greedy one's expense (SIFT-like 5,000 × 128, M = 4, K = 256, seed 0,
  lr 1e-3, training set: after 4 stages the greedy policy's error 8,423 against
  nearest-residual 7,970 at 0.1, 8,006 against 7,976 at 0.02, 7,964 against 7,990 at 0.005). With ``distance_prior=False`` the policy is the paper's bare
  fc(7d, K) head trained from scratch (randomly initialised), which is how we reproduce the
  entropy ablation (Fig. 4: without entropy the sampled codes concentrate on few codewords);
* the codes given to the least-squares update are, per training vector, the best of last
  stage's codes, the greedy policy's and (``learn_from_samples``, default) the codes the policy
  sampled, each ICM-refined when ``refinement``: the paper's alternation updates codebooks
  from the sampling stage, and a sampled code that beats the others is what exploration found.
  We measured that re-solving for the sampled codes alone (exploration noise) or for the bare
  greedy codes makes E *rise* stage after stage (synthetic 2000×32, M=4, K=256: 1.00 → 1.15
  over 12 stages even with the networks frozen): RQ's greedy codes stop being good once the
  codebooks are jointly re-solved. Keeping the best codes makes E non-increasing;
* least-squares ridge λ = ``ridge`` · n / (M·K), pulling each codeword towards its previous
  value, so codewords no code uses keep their place;
* at most ``max_train_points`` vectors (seeded subsample) are used per fit;
* after the last stage the codebooks are re-solved once more for the codes ``encode`` gives;
* ADC search for additive codes: ||q − x̂||² = ||q||² − 2 Σ_m ⟨q, C_m[k_m]⟩ + ||x̂||², with the
  (nq, M, K) inner-product tables −2⟨q, C_m[k]⟩ and ||x̂||² recomputed from the codes (faiss's
  ``ST_norm_float`` search stores the same norms; :meth:`RLQ.to_faiss` gives such an index).

What the policy learns, measured on held-out vectors (``policy_check``). SIFT-like 128-d
(:func:`~explorer.data.make_sift_like`, random_state 100–102 for seeds 0–2), learn 4,000 and base
4,000 disjoint, M = 8, K = 16 (32 bits), 8 stages, lr 1e-3, width 0.25, other parameters default;
mean squared error on the base with the final codebooks.

* ``init="joint"``: the trained policy's own codes are −4.13%, −3.83%, −3.81% against
  nearest-residual encoding and against the untrained network (the same codes: its head starts
  at zero) — 22,391 / 22,608 / 24,612 against 23,354 / 23,508 / 25,586; in-sample, at the last
  stage, −4.19% / −4.16% / −4.45%. The issue's target (2% below both, held out, seeds 0–2) is met
  here. The refined codes are 19,914 / 19,810 / 21,468. At the paper's K = 256 (M = 4, learn
  20,000, base 5,000, random_state 100, seed 0, 8 stages) the same holds for the policy, −3.16%
  against greedy (13,532 against 13,974), but the refined codes are 12,816 against 10,895 from
  the residual start (whose policy is level with greedy there, −0.00%); faiss RQ 10,056, LSQ 10,402.
* ``init="residual"`` (default): +0.12%, −0.08%, −0.12% against nearest-residual encoding (in-sample
  −0.41%, −0.48%, −0.26% at stage 8), while ICM-refined codes are ~4% below it (18,605 / 18,596 /
  19,559 against greedy 19,372 / 19,301 / 20,419): on RQ-shaped codebooks what the policy learns
  in-sample does not carry over to new vectors at this CPU scale.

faiss's LSQ trained on the same learn set (14,825 / 14,815 / 16,481) beats the refined codes of
either start by 20–30%; faiss RQ (beam search: 19,702 / 19,418 / 20,929) is between the two
starts' refined codes; PQ (40,821 / 39,801 / 42,674) far above. The other readings, residual
start, seed 0, same setting: ``state="x"`` −0.31% against greedy on the base (in-sample −0.16% at
stage 8), ``value_head="actions"`` −0.16% (in-sample −0.35%): one seed each, no better than the
default's spread over seeds, so the residual state stays the default for the reason given above.
A probe outside the method, on the residual start, to ask whether a policy of this shape can
learn to beat greedy on new vectors there at all: after the 8 stages, the policy blocks were
trained by imitation, with cross-entropy through the distance-prior logits towards ICM's codes
started from the policy's own (DAgger-like, 256-vector minibatches, Adam 1e-3), seed 0, M = 8,
K = 16. With 4,000 learn
vectors the policy's codes went to −0.88% against greedy in-sample but +0.56% on the base after
20 epochs (−0.37% after 5); with 16,000 learn vectors (3 RL stages first), −1.20% in-sample and
−0.39% on the base after 15 epochs, while ICM itself stays −3.3% on both. Even direct supervision
by the codes ICM finds does not carry 2% to held-out vectors at this scale, so this was not made
part of the method.

What public code says, and why it does not settle these choices. No repository in our index is
identified as the paper's release. A package named ``MCQ`` (stored without its repository name;
its ablation table names "PPO" → ``VCPPO`` and "NOVC", and its comments give Table 2's ε = 0.2,
α = 0.05 and gradient norm 0.5) looks like the authors' development code, but its networks are
not Table 1's IndepBlocks. It differs from the reading above: one decision per vector (M heads
read the standardised x and emit all M codes jointly), a reward from the drop of quantization
error after re-solving the codebooks, and a value network that also reads the codebooks and
codes. Its no-correction variant still subtracts that learned value, so the paper's "value
correction" may mean something other than our constant-baseline ablation; the corrected variant
(``VCPPO``) is not in the index, so we keep our reading and say so here.

Fitted attributes: ``codebooks_`` (M, K, d) float32; ``policy_`` and ``value_`` (torch
``ModuleList`` of M blocks); ``scale_`` float; ``temperatures_`` (M floats); ``history_`` list
of per-stage loss dicts. Kept for checkpoints (``state_dict()`` also after a stopped fit): the
last stage's codebooks, the best codes per training vector, α and the return statistics.

Checkpoints and devices: ``fit(X, resume=state)`` restores everything a stage depends on
(:meth:`RLQ._extra_state`) plus the RNG states, skipping the k-means init, and reaches the codes
of an uninterrupted fit bit for bit on the CPU. Networks and training/encoding tensors live on
``device``; search, ``reconstruct`` and the faiss export work on numpy arrays.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameter
from ..events import EmbeddingSample
from ..kmeans import assign_nearest, init_random_points, lloyd
from ..validation import MAX_CODEWORDS, check_codes, check_float, check_int, check_vectors, code_dtype
from . import register
from ._torch_state import TorchTrainingState, state_copy
from .base import Option, Quantizer, check_bits
from .pq import subsample


STATES = ("residual", "x")
"""What the networks read at step m (``state``): the residual r_m (default) or the vector x."""
INITS = ("residual", "joint")
"""How the codebooks start (``init``): residual k-means (default) or jointly solved from random codes."""
INIT_ICM_ROUNDS = 3
"""ICM rounds per alternation of :func:`joint_init`."""
VALUE_HEADS = ("scalar", "actions")
"""QENet's head (``value_head``): a scalar V(s), or Table 1's fc(7D, K), one Q(s, k) per codeword."""


# --------------------------------------------------------------------------- networks (Table 1)
LAYOUTS = {"sift": (4, 2, 1, 1, 2, 4), "labelme": (1, 0.5, 0.25, 0.25, 0.5, 1)}
"""Table 1's two columns: the six layer-group widths as multiples of D. SIFT/DEEP (D = 128/96)
first expand x to 4D (cat(4, 5, 6) is 7D wide); LabelMe22K (D = 512) keeps D (7D/4 wide)."""


def block_layout(dim: int, layout: str = "auto") -> str:
    """The Table 1 column an IndepBlock for ``dim``-dim input uses: ``layout``, or for "auto"
    "labelme" when dim ≥ 512 and "sift" below (the supplement gives D = 96, 128 and 512 only;
    the threshold between is our choice: expand small inputs, keep large ones)."""
    if layout != "auto":
        return layout
    return "labelme" if dim >= 512 else "sift"


class IndepBlock(nn.Module):
    """Table 1's block: input (n, d) → output (n, out_dim) float32.

    Six layer groups lg(a, b) = Linear(a, b) → ReLU → LayerNorm(b) → Dropout(p), with widths
    d → 4d → 2d → d → d → 2d → 4d (``layout="sift"``, Table 1's SIFT/DEEP column) or
    d → d → d/2 → d/4 → d/4 → d/2 → d (``"labelme"``, its LabelMe22K column), each times
    ``width`` (at least 1), then cat(groups 4, 5, 6) → Linear(·, out_dim) (Table 1's fc(7D, K)
    for the policy; see :class:`RLQ` for the value network's head).
    """

    def __init__(self, dim: int, out_dim: int, *, width: float = 1.0, dropout: float = 0.1, zero_head: bool = False,
                 layout: str = "sift"):
        super().__init__()
        widths = [max(1, int(round(f * dim * width))) for f in LAYOUTS[layout]]
        groups, prev = [], dim
        for w in widths:
            groups.append(nn.Sequential(nn.Linear(prev, w), nn.ReLU(), nn.LayerNorm(w), nn.Dropout(dropout)))
            prev = w
        self.groups = nn.ModuleList(groups)
        self.head = nn.Linear(sum(widths[3:]), out_dim)
        if zero_head:  # the block starts as the zero function (used with the distance prior)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for g in self.groups:
            x = g(x)
            outs.append(x)
        return self.head(torch.cat(outs[3:], dim=1))


class _RunningStd:
    """Running standard deviation of a stream of numbers (Welford / Chan's parallel update)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        nb, mb = len(x), float(x.mean())
        delta = mb - self.mean
        tot = self.n + nb
        self.m2 += float(((x - mb) ** 2).sum()) + delta ** 2 * self.n * nb / tot
        self.mean += delta * nb / tot
        self.n = tot

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / max(self.n, 1))) + 1e-8

    def state(self) -> dict:
        """(n, mean, m2) as plain numbers, for checkpoints."""
        return {"n": int(self.n), "mean": float(self.mean), "m2": float(self.m2)}

    @classmethod
    def from_state(cls, state: dict) -> "_RunningStd":
        out = cls()
        out.n, out.mean, out.m2 = int(state["n"]), float(state["mean"]), float(state["m2"])
        return out


# --------------------------------------------------------------------------- additive-code helpers
def additive_reconstruct(codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Σ_m C_m[k_m]: codebooks (M, K, d), codes (n, M) int64 → (n, d)."""
    M = codebooks.shape[0]
    return codebooks[torch.arange(M, device=codebooks.device)[None, :], codes].sum(1)


def sample_categorical(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One code per row of ``probs`` (n, K) → (n,) int64, drawn from the CPU generator ``gen``.

    On the CPU this is ``torch.multinomial``. On an accelerator a CPU generator cannot drive
    ``multinomial``, so one uniform per row is drawn from ``gen`` on the CPU (n floats moved to
    the device) and inverted through the row's CDF: the same distribution, and every random
    number still comes from the seeded, checkpointed generator.
    """
    if probs.device.type == "cpu":
        return torch.multinomial(probs, 1, generator=gen)[:, 0]
    u = torch.rand((len(probs), 1), generator=gen, dtype=probs.dtype).to(probs.device)
    return inverse_cdf(probs, u)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the index k (n,) int64 with cdf[k−1] < u·cdf[K−1] ≤ cdf[k]: a draw from the
    categorical ``probs`` (n, K) (≥ 0, rows need not sum to 1) given uniforms ``u`` (n, 1) in [0, 1)."""
    cdf = probs.cumsum(1)
    return (cdf < u * cdf[:, -1:]).sum(1).clamp_max(probs.shape[1] - 1)


def solve_codebooks(X: torch.Tensor, codes: torch.Tensor, previous: torch.Tensor, ridge: float) -> torch.Tensor:
    """Least-squares codebooks (M, K, d) for fixed codes (n, M): argmin_C ||X − B C||² + λ||C − C_prev||².

    B (n, M·K) is the one-hot code matrix; the normal equations (BᵀB + λI) C = BᵀX + λ C_prev are
    formed from code-pair counts (never B itself) and solved in float64; λ = ridge · n / (M·K).
    """
    n, d = X.shape
    M, K, _ = previous.shape
    flat = codes + torch.arange(M, dtype=torch.int64, device=codes.device)[None, :] * K  # (n, M) rows of B that are 1
    pairs = (flat[:, :, None] * (M * K) + flat[:, None, :]).reshape(-1)
    gram = torch.bincount(pairs, minlength=(M * K) ** 2).reshape(M * K, M * K).double()
    rhs = torch.zeros((M * K, d), dtype=torch.float64, device=X.device)
    rhs.index_add_(0, flat.reshape(-1), X.double().repeat_interleave(M, dim=0))
    lam = ridge * n / (M * K)
    gram.diagonal().add_(lam)
    rhs += lam * previous.reshape(M * K, d).double()
    return column_major(torch.linalg.solve(gram, rhs).float().reshape(M, K, d))


def column_major(C: torch.Tensor) -> torch.Tensor:
    """C (M, K, d) stored as a column-major (M·K, d) matrix — the layout LAPACK's solve returns,
    so this is a no-op on :func:`solve_codebooks`' result. Training keeps its codebooks in this
    one layout because CPU matmul kernels round differently for different layouts: a resumed fit
    must compute with the very layout of an uninterrupted one to reach bit-identical codes."""
    M, K, d = C.shape
    return C.reshape(M * K, d).T.contiguous().T.reshape(M, K, d)


def icm_refine(X: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, n_rounds: int) -> torch.Tensor:
    """Codes (n, M) after ``n_rounds`` of iterated conditional modes (LSQ's encoder, Martinez et al.
    2018): each k_m in turn becomes argmin_k ||C_m[k]||² − 2⟨x − Σ_{j≠m} C_j[k_j], C_m[k]⟩.
    Each update is exact given the other codes, so the error never increases."""
    codes = codes.clone()
    M = codebooks.shape[0]
    norms = (codebooks * codebooks).sum(-1)  # (M, K)
    residual = X - additive_reconstruct(codebooks, codes)
    for _ in range(n_rounds):
        for m in range(M):
            residual += codebooks[m][codes[:, m]]
            k = (norms[m][None, :] - 2.0 * residual @ codebooks[m].T).argmin(1)
            codes[:, m] = k
            residual -= codebooks[m][k]
    return codes


def joint_init(X: torch.Tensor, n_subspaces: int, n_codewords: int, n_rounds: int, gen: torch.Generator,
               ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Jointly solved additive codebooks (M, K, d) and their codes (n, M), as AQ/LSQ learn them
    (Martinez et al. 2018, without LSQ's perturbations): codes drawn uniformly from ``gen``, then
    ``n_rounds`` × (least-squares codebooks for the codes, :func:`solve_codebooks`; ICM codes for
    the codebooks, :data:`INIT_ICM_ROUNDS` rounds of :func:`icm_refine`), then the codebooks once
    more. The codes returned are ICM's, not nearest-residual ones: no codebook here is fitted to
    the residual of the ones before it."""
    n, d = X.shape
    codes = torch.randint(0, n_codewords, (n, n_subspaces), generator=gen).to(X.device)
    C = solve_codebooks(X, codes, torch.zeros((n_subspaces, n_codewords, d), device=X.device), ridge)
    for _ in range(n_rounds):
        codes = icm_refine(X, C, codes, INIT_ICM_ROUNDS)
        C = solve_codebooks(X, codes, C, ridge)
    return C, codes


def residual_kmeans(X: torch.Tensor, n_subspaces: int, n_codewords: int, n_iter: int, gen: torch.Generator,
                    rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual-quantization codebooks (M, K, d) and their greedy codes (n, M): k-means (``n_iter``
    Lloyd iterations, faiss-style init and empty-cluster repair) on x, then on the residuals."""
    residual = X.clone()
    books, codes = [], []
    for _ in range(n_subspaces):
        Xs = residual[None]
        C = init_random_points(Xs, n_codewords, gen)
        for _state in lloyd(Xs, C, n_iter, rng):
            pass
        assign, _ = assign_nearest(Xs, C)
        books.append(C[0])
        codes.append(assign[0])
        residual = residual - C[0][assign[0]]
    return torch.stack(books), torch.stack(codes, dim=1)


# --------------------------------------------------------------------------- the method
@register
class RLQ(TorchTrainingState, Quantizer):
    """Additive quantizer (M codebooks of K d-dim codewords) with an RL-trained sequential encoder.

    Parameters
    ----------
    n_subspaces : M, number of codebooks (need not divide d). Default 4 (32 bits with K = 256).
    n_codewords : K, codewords per codebook.
    n_iter : sampling/updating stages (one training step and one event each).
    entropy, return_norm, value_correction, refinement : the paper's ablation switches (see the
        module docstring); all on by default.
    width : hidden-width factor of every IndepBlock (1.0 = Table 1).
    lr : η1 = η2, Adam learning rate of policy and value (Table 2: 2e-4).
    entropy_coef : α (Table 2: 0.05); ignored when ``entropy=False``.
    decay : multiplies η1, η2 and α after every updating stage (Table 2: 0.9999).
    clip : PPO clip range ε for the policy ratio and the value change (Table 2: 0.2).
    grad_clip : l2 norm to which gradients are clipped (Table 2: 0.5).
    batch_size : minibatch size of the updating stage (Table 2: 2000); None (default) sizes it to
        the training set (:meth:`_batch_size`: ≥ 32 minibatches a pass when n ≥ 4,096).
    dropout : dropout after each layer norm during updates (Table 2: 0.1).
    ppo_epochs : passes over a stage's transitions per updating stage (not in the supplement; 2).
    refine_iters : ICM rounds per refinement (in ``encode`` and in training) when ``refinement``.
    init : how the codebooks start, "residual" (default: residual k-means, RQ's codebooks) or
        "joint" (least squares and ICM alternated from random codes, :func:`joint_init`, where
        nearest-residual encoding is far from the best codes and the policy has room to learn);
        see the module docstring for when each is the better start.
    init_iter : alternations of the joint init, or Lloyd iterations per codebook of the residual one.
    distance_prior : add −||r − C_m[k]||²/T_m to the policy logits (our choice, see module docs);
        False trains the paper's bare policy head from scratch.
    temperature : T_m relative to RQ's error after step m; lower = greedier sampling (0.005, see
        the module docstring).
    references : add faiss PQ/OPQ/RQ/LSQ reference rows to the ``pqx train`` report (and the
        ``rq`` / ``lsq`` entries of its ``policy_check``).
    state : what the networks read, "residual" (default) or "x" (see the module docstring).
    value_head : QENet's head, "scalar" V(s) (default) or "actions" (Table 1's fc(7D, K), Q(s, k)).
    advantage_norm : normalise advantages per minibatch (PPO practice; ablation switch).
    learn_from_samples : the sampled codes are candidates of the codebook update (default).
    log_every : also report a Step every this many minibatch updates within a stage (not
        resumable: checkpoints stay at stage ends); 0 reports stage ends only. A stop request
        is honoured after the update in progress either way.
    layout : Table 1 column of the IndepBlocks, "sift", "labelme" or "auto" (labelme for d ≥ 512).
    ridge : strength of the least-squares codebook update's pull towards the previous codebooks.
    max_train_points : train on at most this many vectors (seeded subsample); None = all.
    device : torch device of the networks and of every tensor of training and encoding ("cpu",
        "cuda", "mps", "auto"). Sampling draws its random numbers from the seeded CPU generator
        on any device (see :func:`sample_categorical`); GPU runs are not bit-reproducible
        (cuBLAS/cumsum reductions), CPU runs are.

    Checkpoints: ``fit(X, resume=state)`` / ``pqx train --checkpoint/--resume`` continue from the
    stage of ``state`` (see :meth:`_extra_state` for what it holds) and end, on the CPU, with
    the codes of an uninterrupted fit with the same seed.

    Fitted attributes: ``codebooks_`` (M, K, d) float32, ``policy_``, ``value_``, ``scale_``.
    """

    name = "rlq"
    supports_checkpoint = True
    param_choices = {"init": INITS, "state": STATES, "value_head": VALUE_HEADS, "layout": ("auto", *LAYOUTS)}
    training_state_keys = ("policy_optimizer", "value_optimizer")  # Adam states; their lr carries the decay
    network_attrs = ("policy_", "value_")
    title = "RL multi-codebook quantization"
    paper = "Zhu, Song, Gao et al., Revisiting Multi-Codebook Quantization (supplement)"
    cli_options = (
        Option("--no-entropy", "entropy", "[ablation] no entropy regularisation (alpha = 0)", const=False),
        Option("--no-return-norm", "return_norm", "[ablation] raw returns, no return normalisation", const=False),
        Option("--no-correction", "value_correction", "[ablation] constant baseline instead of QENet's value",
               const=False),
        Option("--no-refinement", "refinement", "[ablation] no ICM refinement of codes, in training or encoding",
               const=False),
        Option("--no-distance-prior", "distance_prior", "train the bare policy from scratch, as the paper does "
               "(default adds -||r - c||^2/T to its logits)", const=False),
        Option("--no-references", "references", "skip the faiss PQ/OPQ/RQ/LSQ reference rows of the report",
               const=False),
        Option("--no-advantage-norm", "advantage_norm", "[ablation] no per-minibatch advantage normalisation",
               const=False),
        Option("--init", "init", "how the codebooks start: residual (default: residual k-means) or joint "
               "(least squares + ICM from random codes, as AQ/LSQ: room for the policy to beat greedy)", type=str),
        Option("--state", "state", "what the networks read: residual (default, the sequential MDP) or x "
               "(the supplement's input)", type=str),
        Option("--value-head", "value_head", "QENet's head: scalar V(s) (default) or actions, fc(7D, K) as Table 1 "
               "(Q(s, k) per codeword)", type=str),
        Option("--width", "width", "hidden-width factor of the IndepBlocks (1 = the paper's Table 1)", type=float),
        Option("--lr", "lr", "Adam learning rate of policy and value networks", type=float),
    )

    def __init__(self, n_subspaces: int = 4, n_codewords: int = 256, *, n_iter: int = 20, entropy: bool = True,
                 return_norm: bool = True, value_correction: bool = True, refinement: bool = True,
                 width: float = 0.5, lr: float = 2e-4, entropy_coef: float = 0.05, decay: float = 0.9999,
                 clip: float = 0.2, grad_clip: float = 0.5, batch_size: int | None = None, dropout: float = 0.1,
                 ppo_epochs: int = 2, refine_iters: int = 3, init: str = "residual", init_iter: int = 10,
                 distance_prior: bool = True,
                 temperature: float = 0.005, references: bool = True, state: str = "residual",
                 value_head: str = "scalar", advantage_norm: bool = True, learn_from_samples: bool = True,
                 log_every: int = 8, layout: str = "auto", ridge: float = 1e-3, max_train_points: int | None = 20000,
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.n_iter = n_iter
        self.entropy = entropy
        self.return_norm = return_norm
        self.value_correction = value_correction
        self.refinement = refinement
        self.width = width
        self.lr = lr
        self.entropy_coef = entropy_coef
        self.decay = decay
        self.clip = clip
        self.grad_clip = grad_clip
        self.batch_size = batch_size
        self.dropout = dropout
        self.ppo_epochs = ppo_epochs
        self.refine_iters = refine_iters
        self.init = init
        self.init_iter = init_iter
        self.distance_prior = distance_prior
        self.temperature = temperature
        self.references = references
        self.state = state
        self.value_head = value_head
        self.advantage_norm = advantage_norm
        self.learn_from_samples = learn_from_samples
        self.log_every = log_every
        self.layout = layout
        self.ridge = ridge
        self.max_train_points = max_train_points

    # ----------------------------------------------------------------- validation
    @classmethod
    def grid_for_bits(cls, bits: int, dim: int) -> dict:
        """M=bits/8 additive codebooks of K=256, as in Zhu et al.'s supplement (16 bits = 2 sub-codebooks of 256).

        Codebooks are full-dimensional, so any M suits any d. Raises :class:`InvalidParameter`
        naming ``bits`` when it is not a positive multiple of 8.
        """
        M = check_bits(bits, 8, "8 bits per codebook, K=256") // 8
        return {"n_subspaces": M, "n_codewords": 256}

    def _validate(self, X, y):
        """M ≥ 1 (any M: additive codebooks are full-dimensional), 2 ≤ K ≤ min(n, 65536), the rest in range."""
        check_int(self.n_subspaces, "n_subspaces (M)", low=1)
        check_int(self.n_codewords, "n_codewords (K)", low=2, high=MAX_CODEWORDS,
                  fix="codes are stored as uint16, so K ≤ 65536")
        if self.n_codewords > X.shape[0]:
            raise InvalidParameter(f"n_codewords (K)={self.n_codewords} exceeds the number of training vectors "
                                   f"n={X.shape[0]}; use K ≤ {X.shape[0]} or train on more data")
        check_int(self.n_iter, "n_iter", low=1)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", low=1, fix="or pass None to size minibatches to the training set")
        check_int(self.log_every, "log_every", low=0, fix="0 reports one step per stage only")
        check_int(self.ppo_epochs, "ppo_epochs", low=1)
        check_int(self.refine_iters, "refine_iters", low=0)
        check_int(self.init_iter, "init_iter", low=1)
        check_float(self.temperature, "temperature", low=1e-6)
        if self.max_train_points is not None:
            check_int(self.max_train_points, "max_train_points", low=self.n_codewords,
                      fix="keep at least K training vectors, or pass None for all")
        check_float(self.width, "width", low=1e-3)
        check_float(self.lr, "lr", low=0.0)
        check_float(self.entropy_coef, "entropy_coef", low=0.0)
        check_float(self.decay, "decay", low=0.0, high=1.0)
        check_float(self.clip, "clip", low=0.0)
        check_float(self.grad_clip, "grad_clip", low=0.0)
        check_float(self.dropout, "dropout", low=0.0, high=0.99)
        check_float(self.ridge, "ridge", low=0.0)
        for flag in ("entropy", "return_norm", "value_correction", "refinement", "distance_prior", "references",
                     "advantage_norm", "learn_from_samples"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidParameter(f"{flag} must be True or False; got {getattr(self, flag)!r}")

    # ----------------------------------------------------------------- encoding pieces
    def _policy_codes(self, X: torch.Tensor, *, sample: bool = False, gen: torch.Generator | None = None,
                      policy: nn.ModuleList | None = None):
        """Sequential encoding by the policy (dropout off): codes (n, M) int64 and, when ``sample``,
        the trajectory: residuals r_m (M, n, d) (the states, see :meth:`_state`), log-probs (M, n), baselines V(s) (M, n), the value
        head's estimate of the action taken (M, n; = V(s) for the scalar head, Q(s, a) for the
        ``"actions"`` head) and squared errors ||r_m||² (M+1, n). ``policy`` replaces the fitted
        policy (the untrained network of :meth:`untrained_policy_codes`)."""
        C = self._codebooks_t
        policy = self.policy_ if policy is None else policy
        n = len(X)
        M = self.n_subspaces
        residual = X.clone()
        codes = torch.empty((n, M), dtype=torch.int64, device=X.device)
        states, logps, values, taken, errors = [], [], [], [], [(X * X).sum(1)]
        policy.eval()
        self.value_.eval()
        with torch.no_grad():
            for m in range(M):
                s = self._state(X, residual)
                logits = self._logits(m, s, residual, C, policy)
                if sample:
                    logp_all = torch.log_softmax(logits, dim=1)
                    k = sample_categorical(logp_all.exp(), gen)
                    states.append(residual)
                    logps.append(logp_all.gather(1, k[:, None])[:, 0])
                    v, q = self._value(m, s, logp_all.exp(), k)
                    values.append(v)
                    taken.append(q)
                else:
                    k = logits.argmax(1)
                codes[:, m] = k
                residual = residual - C[m][k]
                if sample:
                    errors.append((residual * residual).sum(1))
        if not sample:
            return codes
        return (codes, torch.stack(states), torch.stack(logps), torch.stack(values), torch.stack(taken),
                torch.stack(errors))

    def _state(self, X: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """What the networks read at a step (n, d): ``state="residual"`` the residual r_m, ``"x"``
        the vector x itself (the supplement's input), divided by the fixed data scale."""
        return (residual if self.state == "residual" else X) / self.scale_

    def _value(self, m: int, s: torch.Tensor, probs: torch.Tensor, actions: torch.Tensor):
        """(V(s) (n,), estimate for the action taken (n,)) from QENet block m. Scalar head: both
        are its output. ``"actions"`` head (Table 1's fc(7D, K)): Q(s, ·) (n, K); V(s) = Σ_k π(k|s)
        Q(s, k) under ``probs`` (n, K) and the action's estimate Q(s, a)."""
        out = self.value_[m](s)
        if self.value_head == "scalar":
            return out[:, 0], out[:, 0]
        return (probs * out).sum(1), out.gather(1, actions[:, None])[:, 0]

    def greedy_codes(self, X) -> np.ndarray:
        """Codes (n, M) of nearest-residual encoding with ``codebooks_`` (RQ's greedy rule:
        k_m = argmin_k ||r_m − C_m[k]||²), no network: what a policy has to beat."""
        return self._codes_batched(self.transform(X), lambda Xb: self._greedy_tensor(Xb, self._codebooks_t))

    @staticmethod
    def _greedy_tensor(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        residual = X.clone()
        codes = torch.empty((len(X), C.shape[0]), dtype=torch.int64, device=X.device)
        for m in range(C.shape[0]):
            k = ((C[m] * C[m]).sum(1)[None, :] - 2.0 * residual @ C[m].T).argmin(1)
            codes[:, m] = k
            residual = residual - C[m][k]
        return codes

    def untrained_policy_codes(self, X) -> np.ndarray:
        """Codes (n, M) of the greedy policy with the networks as ``fit`` initialised them (same
        seed, rebuilt here) and today's ``codebooks_``: the control for what training changed.
        With ``distance_prior`` the untrained head is zero, so this equals :meth:`greedy_codes`."""
        Z = self.transform(X)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state or 0))  # as _generators() before _make_networks in _fit
            policy, _ = self._make_networks(int(self.dim_))
        return self._codes_batched(Z, lambda Xb: self._policy_codes(Xb, policy=policy))

    def _logits(self, m: int, s: torch.Tensor, residual: torch.Tensor, C: torch.Tensor | None = None,
                policy: nn.ModuleList | None = None) -> torch.Tensor:
        """Policy logits (n, K) at step m: the block's output for state s, plus −||r − C_m[k]||² / T_m
        with ``distance_prior`` (T_m = ``temperature`` · mean nearest-codeword error at step m, fixed at init)."""
        logits = (self.policy_ if policy is None else policy)[m](s)
        if self.distance_prior:
            C = (self._codebooks_t if C is None else C)[m]
            d2 = (C * C).sum(1)[None, :] - 2.0 * residual @ C.T  # ||r − c||² − ||r||²: same softmax
            logits = logits - d2 / self.temperatures_[m]
        return logits

    def _encode_tensor(self, X: torch.Tensor, refine: bool | None = None) -> torch.Tensor:
        codes = self._policy_codes(X)
        if (self.refinement if refine is None else refine) and self.refine_iters > 0:
            codes = icm_refine(X, self._codebooks_t, codes, self.refine_iters)
        return codes

    def _encode_embedded(self, Z: np.ndarray, refine: bool | None = None) -> np.ndarray:
        """Codes (n, M) of vectors Z (n, d): the greedy policy, then ICM when ``refinement``.

        ``refine`` overrides the ``refinement`` switch (False gives the policy's own codes).
        """
        return self._codes_batched(Z, lambda X: self._encode_tensor(X, refine))

    def _codes_batched(self, Z: np.ndarray, encode) -> np.ndarray:
        """Codes (n, M) of Z (n, d), ``encode`` (a function of a float32 tensor batch on the
        device, returning (b, M) int64) applied 65,536 rows at a time."""
        out = np.empty((len(Z), self.n_subspaces), dtype=code_dtype(self.n_codewords))
        batch = 65536
        for start in range(0, len(Z), batch):
            X = torch.from_numpy(np.ascontiguousarray(Z[start:start + batch], dtype=np.float32)).to(self._device)
            out[start:start + batch] = encode(X).cpu().numpy()
        return out

    def policy_codes(self, X) -> np.ndarray:
        """Codes (n, M) of the greedy policy alone, without refinement (what the paper's histograms show)."""
        return self._encode_embedded(self.transform(X), refine=False)

    def reconstruct(self, codes) -> np.ndarray:
        """Codes (n, M) → x̂ = Σ_m C_m[k_m] (n, d) float32."""
        self._check_fitted()
        codes = torch.from_numpy(check_codes(codes, self.n_subspaces, self.n_codewords))
        return additive_reconstruct(torch.from_numpy(np.asarray(self.codebooks_)), codes).numpy().astype(np.float32)

    # ----------------------------------------------------------------- search
    def distance_tables(self, queries) -> np.ndarray:
        """Inner-product tables (nq, M, K) float32: T[q, m, k] = −2⟨q, C_m[k]⟩.

        Additive codes are not separable into sub-space distances; the squared distance is
        ||q||² + Σ_m T[q, m, k_m] + ||x̂||² (see :meth:`search`).
        """
        Q = self.transform(queries)
        C = np.asarray(self.codebooks_, dtype=np.float32)
        return np.ascontiguousarray(-2.0 * np.einsum("qd,mkd->qmk", Q, C), dtype=np.float32)

    def search(self, queries, codes, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """ADC for additive codes: (distances (nq, k) float32, ids (nq, k) int64), nearest first.

        Distance = ||q||² − 2 Σ_m ⟨q, C_m[k_m]⟩ + ||x̂||², the look-up tables of
        :meth:`distance_tables` plus the reconstruction norms (faiss ``ST_norm_float``).
        """
        return next(self.search_blocks(queries, codes, k))

    def search_blocks(self, queries, codes, k: int = 100, *, block: int | None = None):
        """:meth:`search` for successive blocks of ``block`` queries (see the base class): the
        tables and query norms are computed once for all queries."""
        from ..search import merge_topk
        k = check_int(k, "k", low=1)
        Q = self.transform(queries)
        tables = torch.from_numpy(self.distance_tables(queries))
        codes = check_codes(codes, self.n_subspaces, self.n_codewords, as_int64=False)  # int64 per base block below
        nq, M, K = tables.shape
        flat_all = tables.reshape(nq, M * K)
        q_norm_all = torch.from_numpy((Q.astype(np.float32) ** 2).sum(1))
        offsets = torch.arange(M, dtype=torch.int64) * K
        block = nq if block is None else block
        for first in range(0, nq, block):
            flat, q_norm = flat_all[first:first + block], q_norm_all[first:first + block]
            rows = max(1, (1 << 24) // max(1, len(flat) * M))
            best_d = best_i = None
            for start in range(0, len(codes), rows):
                c = torch.from_numpy(codes[start:start + rows].astype(np.int64))
                x_norm = torch.from_numpy((self.reconstruct(c.numpy()) ** 2).sum(1))
                d = flat[:, (c + offsets[None, :]).reshape(-1)].reshape(len(flat), len(c), M).sum(-1)
                d += q_norm[:, None] + x_norm[None, :]
                ids = torch.arange(start, start + len(c), dtype=torch.int64)
                best_d, best_i = merge_topk(best_d, best_i, d, ids, k)
            yield best_d.numpy(), best_i.numpy()

    def to_faiss(self):
        """A faiss ``IndexResidualQuantizer`` holding ``codebooks_`` (search type ST_norm_float), empty.

        Add our codes with ``index.add_sa_codes(packed)`` where ``packed = index.sa_encode``-format
        bytes; :func:`pack_codes` below packs (n, M) codes for it. faiss's own ``add`` would encode
        with RQ beam search, not our policy.
        """
        import faiss
        from ..search import faiss_nbits
        self._check_fitted()
        M, K, d = np.asarray(self.codebooks_).shape
        index = faiss.IndexResidualQuantizer(d, M, faiss_nbits(K), faiss.METRIC_L2, faiss.AdditiveQuantizer.ST_norm_float)
        faiss.copy_array_to_vector(np.ascontiguousarray(self.codebooks_, dtype=np.float32).ravel(), index.rq.codebooks)
        index.rq.is_trained = True
        index.is_trained = True
        return index

    def pack_codes(self, codes, index) -> np.ndarray:
        """Codes (n, M) → faiss additive-quantizer bytes (n, code_size) uint8, norms included."""
        import faiss
        codes = check_codes(codes, self.n_subspaces, self.n_codewords)
        x_hat = self.reconstruct(codes)
        norms = (x_hat.astype(np.float32) ** 2).sum(1)
        codes32 = np.ascontiguousarray(codes, dtype=np.int32)  # kept alive: swig_ptr holds no reference
        norms = np.ascontiguousarray(norms, dtype=np.float32)
        out = np.zeros((len(codes), index.code_size), dtype=np.uint8)
        index.rq.pack_codes(len(codes), faiss.swig_ptr(codes32), faiss.swig_ptr(out), -1, faiss.swig_ptr(norms))
        return out

    def extra_report(self, ds, evaluation: dict) -> dict:
        """Report keys ``policy_distortion`` (greedy policy codes, no refinement), ``policy_check``
        and, when ``references``, ``references``: faiss PQ, OPQ, RQ and LSQ at the same M and K
        (see :func:`reference_rows`).

        ``policy_check``: mean squared error over the base (the vectors evaluated; with a learn
        set, vectors the fit never saw) with the final ``codebooks_`` for ``trained`` (the trained
        policy's own greedy codes, no ICM), ``untrained`` (the same networks as initialised,
        :meth:`untrained_policy_codes`), ``greedy`` (nearest-residual encoding,
        :meth:`greedy_codes`) and ``refined`` (what ``encode`` gives: ICM after the policy when
        ``refinement``); beside them ``rq`` and ``lsq``, the faiss references' distortion (None
        without ``references``), and ``trained_vs_greedy`` / ``trained_vs_untrained``, the
        relative differences (trained − other) / other (negative: the policy does better).

        The references train on the same budget as RLQ itself: a seeded sample of at most
        ``max_train_points`` vectors of the training source (:func:`~explorer.data.training_sample`
        of ``ds.learn`` when the dataset has a learn set, else of the base). Every measurement
        reads the base in batches, so only that sample is ever held in memory."""
        from ..data import training_sample
        from ..report import distortion_batched
        check = {"trained": distortion_batched(self, ds.base, self.policy_codes),  # the base read in batches
                 "untrained": distortion_batched(self, ds.base, self.untrained_policy_codes),
                 "greedy": distortion_batched(self, ds.base, self.greedy_codes),
                 "refined": evaluation["distortion"] if "distortion" in evaluation
                 else distortion_batched(self, ds.base, self.encode)}
        for other in ("greedy", "untrained"):
            check[f"trained_vs_{other}"] = (check["trained"] - check[other]) / max(check[other], 1e-30)
        out = {"policy_distortion": check["trained"], "policy_check": check}
        check["rq"] = check["lsq"] = None
        if self.references:
            source = ds.base if ds.learn is None else ds.learn
            train = None if self.max_train_points is None and ds.learn is None else training_sample(
                source, len(source) if self.max_train_points is None else self.max_train_points,
                int(self.random_state or 0))
            out["references"] = reference_rows(ds, self.n_subspaces, self.n_codewords, train=train)
            check["rq"], check["lsq"] = (out["references"][k].get("distortion") for k in ("rq", "lsq"))
        return out

    def _embedding_sample(self, Z: np.ndarray, size: int = 300) -> EmbeddingSample:
        """Sample for the embedding views: subvectors[m] (M, s, d) are the residuals codebook m
        quantizes (the state at step m), codes (s, M) the greedy policy's, codebooks (M, K, d)."""
        rows = np.linspace(0, len(Z) - 1, num=min(size, len(Z))).astype(np.int64)
        X = torch.from_numpy(np.asarray(Z[rows], dtype=np.float32)).to(self._device)
        codes = self._encode_tensor(X, refine=False)
        C = self._codebooks_t
        residual, subs = X.clone(), []
        for m in range(self.n_subspaces):
            subs.append(residual.clone())
            residual -= C[m][codes[:, m]]
        return EmbeddingSample(subvectors=torch.stack(subs).cpu().numpy(), codes=codes.cpu().numpy().astype(np.int64),
                               codebooks=np.array(self.codebooks_))

    @property
    def _device(self) -> torch.device:
        """The device of networks and tensors: ``device_`` (set by ``fit``/``load_state_dict``), else the CPU."""
        device = getattr(self, "device_", None)
        return torch.device("cpu") if device is None else device

    @property
    def _codebooks_t(self) -> torch.Tensor:
        """``codebooks_`` (M, K, d) as a float32 tensor on the device (a view of it on the CPU)."""
        return torch.from_numpy(np.asarray(self.codebooks_, dtype=np.float32)).to(self._device)

    # ----------------------------------------------------------------- training
    def _set_codebooks(self, C: torch.Tensor) -> None:
        self.codebooks_ = np.ascontiguousarray(C.detach().cpu().numpy(), dtype=np.float32)

    def _make_networks(self, dim: int) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Policy and value blocks (one per codebook) for ``dim``-dim inputs, on the device; init
        draws from torch's global RNG (seeded by :meth:`_generators`)."""
        M, K = self.n_subspaces, self.n_codewords
        layout = block_layout(dim, self.layout)
        policy = nn.ModuleList(IndepBlock(dim, K, width=self.width, dropout=self.dropout, zero_head=self.distance_prior,
                                          layout=layout) for _ in range(M))
        heads = 1 if self.value_head == "scalar" else K
        value = nn.ModuleList(IndepBlock(dim, heads, width=self.width, dropout=self.dropout, layout=layout)
                              for _ in range(M))
        return policy.to(self._device), value.to(self._device)

    def _fit(self, X, y, run):
        gen, rng = self._generators()
        Xt = torch.from_numpy(np.ascontiguousarray(subsample(X, self.max_train_points, rng))).to(self._device)
        n, d = Xt.shape
        M, K = self.n_subspaces, self.n_codewords
        self.scale_ = float(torch.sqrt((Xt * Xt).mean()).clamp_min(1e-12))
        self.policy_, self.value_ = self._make_networks(d)
        opt_pi = torch.optim.Adam(self.policy_.parameters(), lr=self.lr)
        opt_v = torch.optim.Adam(self.value_.parameters(), lr=self.lr)

        resumed = getattr(self, "_resume_state", None) is not None
        if not resumed:  # a resumed fit takes all of this from the checkpoint
            if self.init == "joint":
                C, init_codes = joint_init(Xt, M, K, self.init_iter, gen, self.ridge)
                sequential = self._greedy_tensor(Xt, C)
            else:  # residual k-means: its codes are the nearest-residual ones
                C, init_codes = residual_kmeans(Xt, M, K, self.init_iter, gen, rng)
                sequential = init_codes
            self._set_codebooks(C)
            # T_m from nearest-residual encoding's mean error after step m on these codebooks
            seq_err = [(Xt - additive_reconstruct(C[:m + 1], sequential[:, :m + 1])).pow(2).sum(1).mean()
                       for m in range(M)]
            self.temperatures_ = [self.temperature * float(e.clamp_min(1e-12)) for e in seq_err]
            self._stage_codebooks = self.codebooks_  # the codebooks training continues from (not the final ones)
            self._memory = init_codes  # best codes known per training vector
            self._alpha = self.entropy_coef if self.entropy else 0.0
            self._ret_std = _RunningStd()
            self.history_ = []
            if self.init == "joint":  # its codes are ICM's, not the nearest-residual ones of seq_err
                init_err = float(((Xt - additive_reconstruct(C, init_codes)) ** 2).sum(1).mean())
                run.note("init", f"jointly solved codebooks, error {init_err:.4g} "
                                 f"(nearest-residual codes {float(seq_err[-1]):.4g})")
            else:
                run.note("init", f"residual k-means codebooks, error {float(seq_err[-1]):.4g}")
        start = self._start_training(policy_optimizer=opt_pi, value_optimizer=opt_v)  # 0, or the checkpoint's step
        if resumed:  # the stage's codebooks, in the layout solve_codebooks gave them (see column_major)
            C = column_major(torch.tensor(self._stage_codebooks, dtype=torch.float32, device=self._device))
            self._set_codebooks(C)
            self._stage_codebooks = self.codebooks_
        else:
            C = self._codebooks_t
            self._stages_done = 0
        self._resumable_snapshot, self._stopped_within_stage = None, False
        batch_size = self._batch_size(n)
        step = start  # steps reported so far (stage ends and, with log_every, steps within stages)
        for stage in range(self._stages_done + 1, self.n_iter + 1):
            # ---- sampling stage
            C_sample = C
            codes, states, logp_old, v_old, q_old, errors = self._policy_codes(Xt, sample=True, gen=gen)
            x_norm = errors[0].clamp_min(1e-12)
            returns = (errors[:-1] - errors[-1][None, :]) / x_norm[None, :]  # G_m = Σ_{j≥m} ρ_j, (M, n)
            # The stage's three encodings on the same codebooks C: sampled, the greedy policy's
            # own, nearest-residual (what the policy has to beat; Fig. 1's curve is the first two).
            policy = self._policy_codes(Xt)
            mse = lambda c: float(((Xt - additive_reconstruct(C, c)) ** 2).sum(1).mean())  # noqa: E731
            measured = {"sampled_mse": float(errors[-1].mean()), "policy_mse": mse(policy),
                        "greedy_mse": mse(self._greedy_tensor(Xt, C))}
            # Codebooks re-solved by least squares for the best codes known per vector among last
            # stage's, the greedy policy's and (learn_from_samples) the sampled ones, each refined
            # by ICM when ``refinement`` (our choice; it makes E non-increasing, see the module
            # docstring): a sampled code that beats the others enters the codebook update.
            candidates = [self._memory, policy] + ([codes] if self.learn_from_samples else [])
            self._memory = self._best_codes(Xt, C, candidates)
            C = solve_codebooks(Xt, self._memory, C, self.ridge)
            self._set_codebooks(C)
            self._stage_codebooks = self.codebooks_
            measured = {"total": float(((Xt - additive_reconstruct(C, self._memory)) ** 2).sum(1).mean()), **measured}
            if self.return_norm:
                self._ret_std.update(returns.cpu().numpy())
                targets = returns / self._ret_std.std
            else:
                targets = returns
            if self.value_correction:
                advantages = targets - v_old
            else:
                advantages = targets - targets.mean(1, keepdim=True)
            sampled_codes = codes.cpu().numpy()

            def report(done: int, total: int, stats: dict) -> bool:  # a step within the updating stage
                nonlocal step
                step += 1
                return self._run_step(run, step, {**measured, **stats}, sampled_codes, Xt, stage - 1 + done / total,
                                      resumable=False)
            # ---- updating stage
            stats = self._ppo_update(Xt, states, C_sample, codes.T.contiguous(), logp_old, q_old, targets, advantages,
                                     self._alpha, opt_pi, opt_v, gen, batch_size, report, run.stop_requested)
            if stats is None:  # stopped within the stage: the last stage end stays the resumable state
                self._stopped_within_stage = True
                break
            for opt in (opt_pi, opt_v):
                for group in opt.param_groups:
                    group["lr"] *= self.decay
            self._alpha *= self.decay
            losses = {**measured, **stats}
            self.history_.append({"stage": stage, **losses})
            self._stages_done = stage
            step += 1
            if self.log_every:  # steps within stages: keep the stage end for state_dict() after a stop within one
                self._resumable_snapshot = None
                run.steps = step
                self._resumable_snapshot = super().state_dict()
            if not self._run_step(run, step, losses, sampled_codes, Xt, float(stage), resumable=True):
                break
        # Final codebooks for the codes encode() gives (our choice, see the module docstring).
        final = self._encode_tensor(Xt)
        self._set_codebooks(solve_codebooks(Xt, final, self._codebooks_t, self.ridge))

    def _run_step(self, run, step: int, losses: dict, codes: np.ndarray, Xt: torch.Tensor, epoch: float,
                  *, resumable: bool) -> bool:
        """Report one Step (usage of the stage's sampled codes ``codes`` (n, M)); False when a stop
        was requested. ``epoch`` is the fractional stage. The networks' train/eval modes are kept
        (an embedding sample runs the policy in eval mode)."""
        modes = (self.policy_.training, self.value_.training)
        ok = run.step(step, losses, n_codewords=self.n_codewords, codes=codes, epoch=epoch, resumable=resumable,
                      sample=lambda: self._embedding_sample(Xt.cpu().numpy()))
        self.policy_.train(modes[0])
        self.value_.train(modes[1])
        return ok

    def _batch_size(self, n: int) -> int:
        """Minibatch size of the updating stage: ``batch_size``, or when None
        min(2000, max(128, n // 32)) — Table 2's 2000 on SIFT1M's 100k learn vectors is 50
        minibatches a pass; sized to the training set, a pass here has ≥ 32 of them when
        n ≥ 4,096 (at most ⌈n/128⌉ below), so the policy gets updates, not one batch per stage."""
        return self.batch_size if self.batch_size is not None else min(2000, max(128, n // 32))

    @property
    def planned_steps(self) -> int | None:
        """Steps of a full fit: one per stage plus, with ``log_every``, one every ``log_every``
        updates within it (⌊(updates − 1)/log_every⌋ a stage, updates = ppo_epochs ·
        ⌈n/minibatch⌉). The updates depend on the data, so this is None until a fit has seen it."""
        if not self.log_every:
            return int(self.n_iter)
        digest = getattr(self, "_data_digest", None)
        if digest is None:
            return None
        n = int(digest["n"]) if self.max_train_points is None else min(int(digest["n"]), int(self.max_train_points))
        updates = int(self.ppo_epochs) * -(-n // self._batch_size(n))
        return int(self.n_iter) * (1 + (updates - 1) // int(self.log_every))

    @property
    def resumable_steps(self) -> int:
        """Stages completed (what a checkpoint resumes from): ``Checkpointer(every=N)`` counts these."""
        return int(getattr(self, "_stages_done", self.current_step))

    def state_dict(self) -> dict:
        """As :meth:`Quantizer.state_dict`; after a stop within a stage (a step reported with
        ``log_every``), the state at the end of the last stage completed, which resumes exactly.
        Raises :class:`InvalidParameter` when the fit stopped within its first stage."""
        if getattr(self, "_run", None) is None and getattr(self, "_stopped_within_stage", False):
            if self._resumable_snapshot is None:
                raise InvalidParameter("this RLQ fit was stopped within its first stage: there is no completed "
                                       "stage to resume from; fit again (or stop after a stage ends)")
            return copy.deepcopy(self._resumable_snapshot)
        return super().state_dict()

    # ----------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        """Training state beyond ``codebooks_`` (which after a fit are the final, re-solved ones):
        ``policy`` / ``value`` network weights, ``policy_optimizer`` / ``value_optimizer`` Adam
        states (their ``lr`` holds the decay so far), ``stage_codebooks`` (M, K, d) the codebooks
        of the last stage, ``codes`` (n_train, M) int64 the best codes known per training vector,
        ``entropy_coef`` α after its decay, ``return_std`` the running return statistics,
        ``temperatures``, ``scale``, ``history`` and ``stage`` (stages completed; the checkpoint's
        ``step`` also counts the steps reported within stages); all CPU copies."""
        return {"policy": state_copy(self.policy_.state_dict()), "value": state_copy(self.value_.state_dict()),
                **self._training_states(),
                "stage_codebooks": np.array(self._stage_codebooks, dtype=np.float32, copy=True),
                "codes": self._memory.detach().cpu().numpy().astype(np.int64, copy=True),
                "entropy_coef": float(self._alpha), "return_std": self._ret_std.state(),
                "temperatures": [float(t) for t in self.temperatures_], "scale": float(self.scale_),
                "history": copy.deepcopy(list(self.history_)), "stage": int(self._stages_done)}

    def _load_extra_state(self, extra: dict) -> None:
        """Restore :meth:`_extra_state`: the networks (built when there are none, without touching
        the caller's RNG), the registered optimizers when resuming, and the training state."""
        if getattr(self, "policy_", None) is None or getattr(self, "value_", None) is None:
            with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG alone
                self.policy_, self.value_ = self._make_networks(int(self.dim_))
        self.policy_.load_state_dict(extra["policy"])
        self.value_.load_state_dict(extra["value"])
        self._load_training_states(extra)
        self._stage_codebooks = np.array(extra["stage_codebooks"], dtype=np.float32)
        self._memory = torch.from_numpy(np.array(extra["codes"], dtype=np.int64)).to(self._device)
        self._alpha = float(extra["entropy_coef"])
        self._ret_std = _RunningStd.from_state(extra["return_std"])
        self.temperatures_ = [float(t) for t in extra["temperatures"]]
        self.scale_ = float(extra["scale"])
        self.history_ = copy.deepcopy(list(extra["history"]))
        self._stages_done = int(extra.get("stage", len(self.history_)))

    def load_state_dict(self, state: dict) -> "RLQ":
        """Rebuild a usable model (networks in eval mode, final ``codebooks_``) from a
        :meth:`state_dict`; return self. Its ``state_dict()`` can still resume the training."""
        super().load_state_dict(state)
        self.policy_.eval()
        self.value_.eval()
        return self

    def _best_codes(self, X: torch.Tensor, C: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
        """Per vector, the candidate codes (n, M) with the lowest error under C, after ICM when ``refinement``."""
        best, best_err = None, None
        for codes in candidates:
            if self.refinement and self.refine_iters > 0:
                codes = icm_refine(X, C, codes, self.refine_iters)
            err = ((X - additive_reconstruct(C, codes)) ** 2).sum(1)
            if best is None:
                best, best_err = codes.clone(), err
            else:
                better = err < best_err
                best[better], best_err = codes[better], torch.where(better, err, best_err)
        return best

    def _ppo_update(self, X, residuals, C_sample, actions, logp_old, q_old, targets, advantages, alpha, opt_pi, opt_v,
                    gen, batch_size: int, report=None, should_stop=None) -> dict | None:
        """One updating stage; returns the mean policy loss, value loss and entropy over its
        minibatches, or None when ``should_stop()`` became true after an update (a stop within
        the stage) or ``report`` returned False.

        X (n, d) the training vectors, residuals (M, n, d) their residuals r_m; C_sample (M, K, d) the codebooks the states were sampled with; actions,
        logp_old, q_old (the value head's estimate of the action taken), targets, advantages (M, n).
        L_θ = −mean min(r·A, clip(r, 1±ε)·A) − α·H(π), r = π(a|s)/π_old(a|s) (PPO, Schulman 2017);
        L_τ = ½ mean max((V − G)², (V_old + clip(V − V_old, ±ε) − G)²) (PPO2's clipped value loss),
        V the scalar head's V(s) or, for the ``"actions"`` head, Q(s, a). With ``advantage_norm``
        A is normalised per minibatch (zero mean, unit std; PPO practice, not the supplement's).
        ``report(done, total, stats)`` is called every ``log_every`` minibatch updates but the
        last, with the running means so far.
        """
        M, n = actions.shape
        eps = self.clip
        self.policy_.train()
        self.value_.train()
        sums = {"policy": 0.0, "value": 0.0, "entropy": 0.0}
        count = 0
        total = self.ppo_epochs * -(-n // batch_size)
        for _ in range(self.ppo_epochs):
            perm = torch.randperm(n, generator=gen).to(residuals.device)
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                pol_loss = val_loss = ent = 0.0
                for m in range(M):
                    r = residuals[m, idx]
                    s = self._state(X[idx], r)
                    a = actions[m, idx]
                    logp_all = torch.log_softmax(self._logits(m, s, r, C_sample), dim=1)
                    logp = logp_all.gather(1, a[:, None])[:, 0]
                    ratio = torch.exp(logp - logp_old[m, idx])
                    A = advantages[m, idx]
                    if self.advantage_norm:
                        A = (A - A.mean()) / (A.std() + 1e-8) if len(A) > 1 else A - A.mean()
                    pol_loss = pol_loss - torch.min(ratio * A, ratio.clamp(1 - eps, 1 + eps) * A).mean()
                    ent = ent + (-(logp_all.exp() * logp_all).sum(1)).mean()
                    out = self.value_[m](s)
                    v = out[:, 0] if self.value_head == "scalar" else out.gather(1, a[:, None])[:, 0]
                    vo, G = q_old[m, idx], targets[m, idx]
                    v_clip = vo + (v - vo).clamp(-eps, eps)
                    val_loss = val_loss + 0.5 * torch.max((v - G) ** 2, (v_clip - G) ** 2).mean()
                loss_pi = (pol_loss - alpha * ent) / M
                opt_pi.zero_grad()
                loss_pi.backward()
                nn.utils.clip_grad_norm_(self.policy_.parameters(), self.grad_clip)
                opt_pi.step()
                opt_v.zero_grad()
                (val_loss / M).backward()
                nn.utils.clip_grad_norm_(self.value_.parameters(), self.grad_clip)
                opt_v.step()
                sums["policy"] += float(pol_loss.detach()) / M
                sums["value"] += float(val_loss.detach()) / M
                sums["entropy"] += float(ent.detach()) / M
                count += 1
                means = {k: v / count for k, v in sums.items()}
                if should_stop is not None and should_stop():
                    return None
                if report is not None and self.log_every and count % self.log_every == 0 and count < total:
                    if not report(count, total, means):
                        return None
        return means

# --------------------------------------------------------------------------- reports and benchmarks
def reference_rows(ds, n_subspaces: int, n_codewords: int, kinds=("pq", "opq", "rq", "lsq"), *,
                   train=None, batch_size: int | None = None) -> dict:
    """Reference rows {kind: row} of faiss PQ, OPQ, RQ and LSQ at the same M and K (the same bits),
    each trained on ``train`` (n_train, d) (default: ``ds.base``, read into memory once for all kinds).

    Each row is :func:`explorer.sweep.reference_row`'s, the one row format of the sweep and the
    dashboard: ``distortion`` (mean ||x − x̂||² over the base), ``recall_at`` {"1","10","100"}
    (None without queries; exact L2 ground truth), ``map``, ``fit_seconds``, ``encode_seconds``,
    usage figures; PQ and OPQ need M | d, otherwise their row carries an ``error``.

    The base is measured ``batch_size`` rows at a time (:func:`~explorer.search.evaluate_faiss`,
    default 2^21 / d rows: encoded once, decoded for the distortion, its codes added to the index),
    so a memory-mapped base is held whole only as the training set; pass a sample as ``train`` to
    bound that too. Results equal one faiss call over the whole base, but LSQ's codes on a base of
    more than ``batch_size`` rows (see :data:`~explorer.search.FAISS_BATCH`).
    """
    from ..data import ground_truth
    from ..report import RECALL_AT
    from ..sweep import reference_row
    train = check_vectors(ds.base if train is None else train, "base" if train is None else "train")
    gt = ground_truth(ds, max(RECALL_AT)) if ds.queries is not None else None
    # random_state: faiss_reference's default k-means seed, which these rows were always trained with
    return {kind: reference_row(kind, ds, gt, n_subspaces, n_codewords, train=train, batch_size=batch_size,
                                random_state=1234) for kind in kinds}


def encode_time_ratios(X=None, *, n_subspaces: int = 4, n_codewords: int = 256, quantizer: "RLQ | None" = None,
                       n_iter: int = 5, random_state: int = 0) -> dict:
    """Encoding time of RLQ relative to faiss PQ and LSQ, measured in one run (Table 3's shape).

    X (n, d) float32 (default: the seeded synthetic set, 5,000 × 32); ``quantizer`` a fitted
    :class:`RLQ` (default: one fitted here with ``n_iter`` stages). PQ and LSQ are faiss's, trained
    on the same X with the same M and K (PQ with M | d). Returns seconds for ``rlq`` (policy +
    refinement), ``rlq_no_refinement`` (policy only, the paper's "Ours*"), ``pq``, ``lsq``, and the
    ratios ``rlq_over_pq``, ``rlq_over_lsq``, ``rlq_no_refinement_over_pq``,
    ``rlq_no_refinement_over_lsq``. For ``pqx bench``: the numbers are wall-clock, so run it on an
    idle machine.
    """
    from ..data import make_synthetic
    from ..search import faiss_reference
    X = make_synthetic(5000, 32, random_state=random_state).base if X is None else X
    X = np.ascontiguousarray(X, dtype=np.float32)
    q = quantizer or RLQ(n_subspaces, n_codewords, n_iter=n_iter, references=False, random_state=random_state).fit(X)
    M, K = q.n_subspaces, q.n_codewords

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    out = {"rlq": timed(lambda: q._encode_embedded(X, refine=True)),
           "rlq_no_refinement": timed(lambda: q._encode_embedded(X, refine=False))}
    for kind in ("pq", "lsq"):
        index = faiss_reference(kind, X, M, K)
        out[kind] = timed(lambda: index.sa_encode(X))
    for name in ("rlq", "rlq_no_refinement"):
        for ref in ("pq", "lsq"):
            out[f"{name}_over_{ref}"] = out[name] / max(out[ref], 1e-12)
    return out
