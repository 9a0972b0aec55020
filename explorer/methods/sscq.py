"""Self-Supervised Consistent Quantization (Wu, Zhang & Liwicki, "Hierarchical Quantization
Consistency for Fully Unsupervised Image Retrieval", BMVC 2023, arXiv 2206.09806; supplement by
Zhang, Liwicki & Cipolla; SSCQ).

A backbone maps an image to an embedding f ∈ R^D, cut into M sub-embeddings f_m ∈ R^{D/M}. Each
subspace has a codebook C_m of K codewords; the soft quantization (SPQ, Jang & Cho, ICCV 2021) is

    p_{m,k} = softmax_k( s(f_m, c_{m,k}) / τ_sq ),     z_m = Σ_k p_{m,k} c_{m,k},     z = [z_1 … z_M],

with s the cosine similarity. Training sees two random views of every image (Algorithm 1 of the
supplement) and minimises, without any label,

    L = λ_icz L_icz + λ_icf L_icf + λ_pn L_pn + λ_cc L_cc + λ_cd L_cd.

What the code follows exactly (supplement): the hyper-parameters (K = 16, D/M = 16, τ_sq = 0.2,
τ_ic = 0.5, λ_pn = 0.1, N_k = 20, τ_pn = 0.5, λ_cc = 0.4, τ_cc = 0.2, λ_cd = 0.2; Adam, lr 5e-4,
weight decay 1e-5, warm-up then cosine decay without restart), L_icf (supp. Eq. 2), L_cd (supp.
Eq. 1: the softmax of the plain cosine, "not directly computed using soft quantization code"),
the three other L_cd forms that the supplement's Fig. 2 compares (``cd_variant``), and the
inference rule (hard codes for the database, asymmetric distance from the query's
sub-embeddings: the sum of squared Euclidean distances, see "Search" below).

The supplement refers to main-paper equations it does not reprint. We take them from the
authors' released implementation (github.com/cazhang/sscq; read, not copied), which also
confirms our L_cd exactly (softmax of the cosine between normalised f_m and c_{m,k}, averaged
over the 2N_b views, Σ p̂ log p̂ averaged over codebooks):

* **L_icz** (instance contrastive on z): NT-Xent (SimCLR) over the 2N_b quantized vectors with
  τ_ic, the two views of one image being the only positive pair — supp. Eq. 2 with z for f.
* **L_pn** (part-neighbour consistency): in every subspace m separately, the candidates of a
  sub-quantized vector z_{i,m} are the sub-quantized vectors of the *other* images in the batch;
  L_pn is −log of the softmax mass (cosine / τ_pn) that its N_k most similar candidates hold
  (:func:`part_neighbour_loss`). It pulls neighbouring parts together — the clustering pressure
  that, per the supplement, "may result in reduced diversity of the subspace features" and that
  L_cd counters. (Before we read the released code we used a multi-positive contrastive form
  with the other view as a positive; the measurements below are for the released form except
  where marked "earlier L_pn".)
* **L_cc** (global consistency on the fused representation h = φ(f, z)): each view's similarity
  distribution over the other images of the batch (softmax of cosine / τ_cc over the 2N_b − 2
  representations) should match the other view's — their symmetric KL divergence, CO2's
  consistent contrast (Wei et al., ICLR 2021, the supplement's ref. [22]). φ is concatenation
  [f, z] (default, as the issue asks, ``fusion="concat"``) or the sum f + z (``fusion="sum"``,
  the released code's default), the two variants that the supplement's Fig. 2 finds best.

Where the released code differs from the paper we follow the paper: its command-line defaults
weigh L_icz and L_icf by 0, while the supplement's Algorithm 1 computes both into the objective
(we weigh them 1). Choices where both are silent or where we depart, and why:

* f_m and the codewords are L2-normalised before use, so that the cosine similarity s used in
  training and the Euclidean nearest codeword / ADC used at inference rank identically
  (‖f_m − c‖² = 2 − 2 s(f_m, c) for unit vectors). ``embed`` returns the normalised f and
  ``codebooks_`` are the normalised codewords; z is built from them too. (The released code
  soft-quantizes raw f by squared Euclidean distance, SPQ's form; measured below, it changes none
  of the conclusions about L_cd.)
* Codewords start as random directions at norm 0.1 (SPQ initialises its codebooks small, Xavier
  gain 0.1). Only their direction matters, but Adam turns a codeword by about lr / ‖c‖ radians per
  step: from a plain randn draw (norm ≈ 4) the codewords turned 0.4° in 5 epochs on digits — a
  frozen random codebook — and from norm 0.1 they turn about 13° (19° after 10 epochs).
* The paper warms up for 10 epochs of an 800-epoch GPU run; the short CPU runs here warm up for
  min(``warmup_epochs``, ⌈epochs / 10⌉) epochs (linear ramp, per batch), then decay by cosine to
  lr / 10 (:data:`LR_FLOOR`, the released code's floor on CIFAR-10).
* Augmentations are those of :mod:`explorer.augment` (shift/zoom/rotation, contrast, erasing,
  noise) instead of the paper's colour-photo recipe; plain vectors get feature drop-out and noise.
* A Step comes every ``log_every`` mini-batches and at each epoch's end (:mod:`._deep`); its
  losses are the means over those mini-batches of the unweighted terms ("icz", "icf", "pn", "cc",
  "cd"; a term whose weight is 0 is neither computed nor reported) and of "total", the weighted
  objective; its usage counts the hard codes of their augmented training views; ``history_``
  keeps the epoch means. A Note ("warm-up") marks the end of the warm-up.
* Search: the database gets hard codes (nearest codeword); a query's distance to an item is the
  sum over subspaces of the *squared* Euclidean distances between its sub-embeddings and the
  item's codewords, Σ_m ‖q_m − c_{m,k_m}‖² = ‖q − ẑ‖² (standard ADC, Jégou et al.; the base
  class's ``distance_tables``). The supplement says it sums "the Euclidean distance" of every
  sub-embedding, which read literally is Σ_m ‖q_m − c‖ without squares, a different ranking; it
  cites ADC for the rule, so we take ADC's squared form.

Variants (each a named parameter):

* ``preset="spq"``: the instance-contrastive terms alone (L_icz + L_icf; L_pn, L_cc and L_cd off
  whatever their λ) — the SPQ-like baseline SSCQ is compared with in the paper's Table 1, trained
  on the same data, bits, epochs and seeds. (SPQ's own cross-quantized contrast pairs f of one view
  with z of the other; ours contrasts z with z and f with f, SSCQ's two instance terms.)
* ``n_neighbours=0``: L_pn off, the "N_k = 0" column of the supplement's Table 4.
* ``geometry="released"``: the authors' released code's geometry instead of our cosine one — raw
  f and raw codewords (Xavier-uniform initialisation), soft quantization by squared distance,
  p = softmax_k(−‖f_m − c_{m,k}‖² / τ_sq), and a projection head before the instance-contrastive
  terms; with ``fusion="sum"`` (the released default for L_cc) it is their whole setting. L_cd
  keeps the cosine of normalised f_m and c (as their code computes it). Codes are nearest
  codewords by squared distance and search is ADC on raw f, so both geometries search the way
  they train.

Measured on digits (1,597 base images, 200 queries, 32 bits, seed 0, CPU): mAP@all 0.72 after 5
epochs, 0.78 after 10, 0.84 after 20, against 0.65 for k-means PQ on the raw pixels.

What L_cd does here (mean codeword perplexity of the base's hard codes, of K = 16; digits, M = 8,
5 epochs, seeds 0–2; λ_cd = 0.2):

* The paper's L_cd barely acts: 9.36 with it against 9.31 without (+0.6%; "ed" +2.8%, "spro"
  +0.0%). Its softmax of a cosine spans at most a factor e² between codewords, so a batch piled
  on one codeword scores only ≈0.05 nats above an evenly spread one, and λ_cd = 0.2 makes that
  gradient small beside the other terms. It stays so over longer training: digits after 100
  epochs (seeds 0–1) 10.87 and 11.43 against 10.78 and 11.41, mAP 0.92 either way. With the
  earlier L_pn it held wider and on other data too: digits at M = 16 (64 bits) after 60 epochs
  10.35 against 10.33; 5,800 Fashion-MNIST images (28×28, batch 256) after 30 epochs 9.47
  against 9.47; the synthetic 4,800 × 32 vectors (MLP backbone) 11.5 against 11.5.
* ``cd_variant="soft"`` (the soft-quantization probabilities, τ_sq = 0.2) is the strong form
  (≈2.2 nats between piled and spread): 10.79 against 9.31 (+16%), dead codewords 10 against 30
  of 384, mAP unchanged (0.72–0.75).
* No run collapses: L_icz, the NT-Xent on z, cannot be low when many images share one code,
  so it keeps every codebook in use by itself (the untrained model starts collapsed, perplexity
  ≈ 3, in 6 of 8 subspaces; every run leaves that state within two epochs). What we see is the
  supplement's "reduced diversity of the subspace features", not a codebook collapse.
* Only with the instance terms off (λ_icz = λ_icf = 0: L_pn, L_cc and L_cd alone, the released
  code's defaults) do the codebooks collapse. The soft form of L_cd holds most of them open at
  once (3 epochs, seeds 0–2: 0, 0 and 1 of 8 subspaces collapsed with it, 5–6 without). The
  paper's form acts slowly: after 3–5 epochs it has changed nothing (5–7 of 8), but given
  training it reopens most codebooks while all stay collapsed without it — at the paper's lr
  after 100 epochs 3 and 5 of 8 collapsed against 8 and 8 (seeds 0–1; perplexity 4.78 and 4.24
  against 3.80 and 3.56); at lr 1e-3 after 50 epochs 4 and 5 against 8 and 8; at lr 2e-3 after
  25 epochs 4, 5 and 4 against 8, 8 and 8 (seeds 0–2; the test's setting). On 5,800
  Fashion-MNIST images (28×28, batch 256, lr 2e-3, 25 epochs, seed 0): perplexity 7.79 against
  5.95, dead codewords 35 against 68, 0 against 4 of 8 subspaces collapsed.
* In the released code's own geometry (raw f, squared-Euclidean soft quantization, Xavier
  codebooks, sum fusion) the picture is the same. Instance terms off: after 5 epochs 5–8 of 8
  collapsed with the paper's L_cd, 5–6 without (seeds 0–2); after 100 epochs 3 and 1 against 4
  and 4 (seeds 0–1; perplexity 6.70 and 7.08 against 6.62 and 6.32). Instance terms on, 5
  epochs: perplexity 8.67 against 8.64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..augment import GreyAugment, augment_vectors
from ..backbones import make_backbone
from ..errors import InvalidParameter
from ..search import adc_search
from ..validation import check_float, check_int
from . import register
from ._deep import DEEP_OPTIONS, LOG_EVERY, DeepQuantizer, StepWindow
from .base import Option, check_bits

LOSS_TERMS = ("icz", "icf", "pn", "cc", "cd")
FUSIONS = ("concat", "sum")
CD_VARIANTS = ("entropy", "soft", "ed", "spro")  # supp. Fig. 2 (left); see codeword_diversity
PRESETS = ("sscq", "spq")  # the full objective, or the instance-contrastive terms alone (SPQ, Table 1's baseline)
GEOMETRIES = ("cosine", "released")  # see SSCQNet
SUB_DIM = 16  # the paper's D/M
CODEWORD_INIT_NORM = 0.1  # see SSCQNet: small, so Adam can move the codeword directions
LR_FLOOR = 0.1  # the cosine decay ends at lr / 10, as the authors' released code does on CIFAR-10


# ---------------------------------------------------------------------------------------- losses
def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss, a scalar: row i of ``a`` (N, D) and row i of ``b`` (N, D) are the
    positive pair, every other of the 2N rows a negative; cosine similarity / ``tau``.

    Supp. Eq. 2 (L_icf) with f; with z it is L_icz.
    """
    n = len(a)
    h = F.normalize(torch.cat([a, b]), dim=1)
    sim = h @ h.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(sim.device)
    return F.cross_entropy(sim, target)


def part_neighbour_loss(z: torch.Tensor, tau: float, n_neighbours: int) -> torch.Tensor:
    """L_pn, a scalar, from sub-quantized vectors ``z`` (2N, M, D/M): rows i and i+N are the two
    views of one image.

    In each subspace m, the candidates of z_{i,m} are the 2N − 2 rows of the *other* images (itself
    and its other view excluded); its neighbours are the ``n_neighbours`` (N_k) candidates of
    highest cosine similarity s. The loss is the negative log of the share of the neighbours in the
    softmax over all candidates,

        L_pn = mean_{i,m} [ log Σ_{j ∈ cand(i)} exp(s_ij / τ_pn) − log Σ_{j ∈ N_k(i)} exp(s_ij / τ_pn) ],

    0 when N_k ≥ 2N − 2. The neighbours are chosen by value, and the gradient flows through their
    similarities (the authors' released implementation; module docstring).
    """
    n2, M, _ = z.shape
    n = n2 // 2
    if n2 <= 2:                                                          # one image: no candidates
        return z.new_zeros(())
    h = F.normalize(z, dim=-1).transpose(0, 1)                          # (M, 2N, ds)
    sim = h @ h.transpose(1, 2) / tau                                    # (M, 2N, 2N)
    rows = torch.arange(n2, device=z.device)
    own = torch.zeros(n2, n2, dtype=torch.bool, device=z.device)
    own[rows, rows] = True
    own[rows, (rows + n) % n2] = True                                    # itself and its other view
    candidates = sim[:, ~own].reshape(M, n2, n2 - 2)
    nearest = candidates.topk(min(n_neighbours, n2 - 2), dim=-1).values  # (M, 2N, N_k)
    return (torch.logsumexp(candidates, -1) - torch.logsumexp(nearest, -1)).mean()


def consistency_loss(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """L_cc, a scalar: symmetric KL between the similarity distributions of the two views.

    a, b: (N, D') fused representations of view 1 and view 2 (row i = image i). For image i,
    view 1's distribution is softmax over the 2N − 2 representations of the *other* images of
    cos(a_i, ·) / τ_cc, and likewise for view 2; the loss is ½ (KL(P_a‖P_b) + KL(P_b‖P_a)),
    averaged over images — CO2's consistent contrast (our reconstruction; module docstring).
    """
    n = len(a)
    h = F.normalize(torch.cat([a, b]), dim=1)
    sim = h @ h.T / tau                                                  # (2N, 2N)
    idx = torch.arange(n, device=a.device)
    same = torch.zeros(n, 2 * n, dtype=torch.bool, device=a.device)
    same[idx, idx] = True
    same[idx, idx + n] = True
    log_pa = F.log_softmax(sim[:n].masked_fill(same, float("-inf")), dim=-1).masked_fill(same, 0.0)
    log_pb = F.log_softmax(sim[n:].masked_fill(same, float("-inf")), dim=-1).masked_fill(same, 0.0)
    pa, pb = log_pa.exp().masked_fill(same, 0.0), log_pb.exp().masked_fill(same, 0.0)
    kl_ab = (pa * (log_pa - log_pb)).sum(-1)
    kl_ba = (pb * (log_pb - log_pa)).sum(-1)
    return 0.5 * (kl_ab + kl_ba).mean()


def codeword_diversity(cosine: torch.Tensor, variant: str = "entropy", tau_sq: float = 0.2) -> torch.Tensor:
    """L_cd, a scalar, from the cosine similarities ``cosine`` (2N, M, K) = s(f_{i,m}, c_{m,k}).

    Every variant first averages an assignment distribution over the batch, p̂_{m,k}, then
    penalises its concentration; minimising it spreads the batch over all K codewords. The
    variants are the four of the supplement's Fig. 2 (left):

    * ``"entropy"`` (L_cd, supp. Eq. 1, the paper's choice): p = softmax_k(s), no temperature;
      L = (1/M) Σ_m Σ_k p̂ log p̂, in [−log K, 0]. With s a cosine the softmax spans at most a
      factor e² between codewords, so this is a gentle term (see the class docstring).
    * ``"soft"`` (L_cd-soft): p = the soft-quantization probabilities softmax_k(s / τ_sq).
    * ``"ed"`` (L_cd-ed): p = softmax_k(−‖f_m − c_{m,k}‖²), which for unit vectors is softmax_k(2s).
    * ``"spro"`` (L_cd-spro): Eq. 1's p, with the entropy replaced by the squared probability
      (1/M) Σ_m Σ_k p̂², in [1/K, 1] (the supplement names it only; this is our reading).
    """
    if variant == "soft":
        logits = cosine / tau_sq
    elif variant == "ed":
        logits = 2.0 * cosine
    else:
        logits = cosine
    p_mean = F.softmax(logits, dim=-1).mean(dim=0)                           # (M, K)
    if variant == "spro":
        return (p_mean ** 2).sum(-1).mean()
    return (p_mean * torch.log(p_mean.clamp_min(1e-12))).sum(-1).mean()


# ---------------------------------------------------------------------------------------- model
class SSCQNet(nn.Module):
    """Backbone plus M codebooks of K codewords (D/M dims each), in one of two geometries.

    ``geometry="cosine"`` (default): ``embed(x)`` (b, d) → f (b, D), each sub-embedding
    L2-normalised; codewords are unit vectors; the soft-quantization scores are cosines.
    ``geometry="released"`` (the authors' released code, after SPQ): f and the codewords are raw
    (Xavier-uniform initial codewords), the scores are negative squared distances −‖f_m − c‖², and
    a projection head (Linear–ReLU–Linear, D → D → D) maps f and z before the instance-contrastive
    losses (:meth:`project`; identity in the cosine geometry).
    ``quantize(f, tau)`` → (z (b, D) soft quantized, scores (b, M, K), cosines (b, M, K)): hard
    codes are the argmax of the scores (the nearest codeword either way); L_cd uses the cosines.
    """

    def __init__(self, backbone: nn.Module, n_subspaces: int, n_codewords: int, sub_dim: int, gen: torch.Generator,
                 geometry: str = "cosine"):
        super().__init__()
        self.backbone = backbone
        self.n_subspaces = n_subspaces
        self.released = geometry == "released"
        if self.released:  # SPQ's Xavier-uniform codebooks, used as they are
            bound = math.sqrt(6.0 / (n_codewords + sub_dim))
            c = (torch.rand((n_subspaces, n_codewords, sub_dim), generator=gen) * 2 - 1) * bound
            self.codewords = nn.Parameter(c)
            D = n_subspaces * sub_dim
            self.head = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, D))
        else:
            # Random directions stored at norm CODEWORD_INIT_NORM (SPQ's small init, Xavier gain 0.1): only
            # the direction is used, and Adam's step turns a codeword by about lr / ‖c‖ radians, so at the
            # norm ≈ 4 of a plain randn draw the codewords stayed frozen (0.4° in 5 epochs on digits).
            c = F.normalize(torch.randn((n_subspaces, n_codewords, sub_dim), generator=gen), dim=-1)
            self.codewords = nn.Parameter(CODEWORD_INIT_NORM * c)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.released:
            return f
        return F.normalize(f.reshape(len(f), self.n_subspaces, -1), dim=-1).reshape(len(f), -1)

    def codebooks(self) -> torch.Tensor:
        """(M, K, D/M) codewords: unit-norm in the cosine geometry, raw in the released one."""
        return self.codewords if self.released else F.normalize(self.codewords, dim=-1)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The projection head of the released geometry (identity in the cosine geometry)."""
        return self.head(h) if self.released else h

    def quantize(self, f: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        C = self.codebooks()
        fs = f.reshape(len(f), self.n_subspaces, -1)
        cosine = torch.einsum("bmd,mkd->bmk", F.normalize(fs, dim=-1), F.normalize(C, dim=-1)) if self.released \
            else torch.einsum("bmd,mkd->bmk", fs, C)
        scores = -(fs.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("bmd,mkd->bmk", fs, C)
                   + C.pow(2).sum(-1)[None]) if self.released else cosine
        z = torch.einsum("bmk,mkd->bmd", F.softmax(scores / tau, dim=-1), C)
        return z.reshape(len(f), -1), scores, cosine


# ---------------------------------------------------------------------------------------- method
@register
class SSCQ(DeepQuantizer):
    """Self-supervised consistent quantization: unsupervised deep PQ by contrastive learning.

    Parameters (paper defaults; every loss weight 0 switches its term off)
    ----------
    n_subspaces : M (paper: 4, 8 or 16).   n_codewords : K (paper: 16).
    embedding_dim : D; None (default) = 16 · M, the paper's D/M = 16. Must be a multiple of M.
    epochs, batch_size (N_b), lr, weight_decay : Adam's schedule (paper: N_b 256 on CIFAR-10,
        lr 5e-4, weight decay 1e-5; batch 128 here suits the 1,797 digits).
    warmup_epochs : linear warm-up length, capped at ⌈epochs / 10⌉; then cosine decay.
    backbone, image_shape : see :class:`~explorer.methods._deep.DeepQuantizer`.
    tau_sq : τ_sq, soft-quantization temperature (0.2).
    lambda_icz, lambda_icf, tau_ic : weights of L_icz and L_icf (1, 1) and their temperature τ_ic (0.5).
    lambda_pn, n_neighbours, tau_pn : L_pn weight λ_pn (0.1), N_k (20; 0 switches L_pn off), τ_pn (0.5).
    lambda_cc, tau_cc, fusion : L_cc weight λ_cc (0.4), τ_cc (0.2), φ = "concat" or "sum".
    lambda_cd : λ_cd (0.2), the codeword-diversity weight; 0 switches L_cd off.
    cd_variant : form of L_cd, one of :data:`CD_VARIANTS` (supp. Fig. 2): "entropy" (Eq. 1, the
        paper's; default), "soft", "ed" or "spro"; see :func:`codeword_diversity`.
    preset : "sscq" (default, the full objective) or "spq" (instance-contrastive terms alone).
    geometry : "cosine" (default) or "released" (module docstring, :class:`SSCQNet`).
    log_every : mini-batches between Steps (:class:`~explorer.methods._deep.DeepQuantizer`).

    Fitted attributes: ``model_`` (:class:`SSCQNet`), ``codebooks_`` (M, K, D/M) float32 unit
    codewords, ``history_`` (list of per-epoch loss dicts).
    """

    name = "sscq"
    title = "SSCQ (self-supervised consistent quantization)"
    paper = "Wu, Zhang & Liwicki, BMVC 2023"
    supervised = False
    has_soft_codes = True
    supports_checkpoint = True  # model, Adam, warm-up/cosine schedule, epoch, RNGs (see _deep.py)
    param_choices = {**DeepQuantizer.param_choices, "fusion": FUSIONS, "cd_variant": CD_VARIANTS, "preset": PRESETS,
                     "geometry": GEOMETRIES}
    cli_options = DEEP_OPTIONS + (
        Option("--lambda-cd", "lambda_cd", "codeword-diversity weight λ_cd (default 0.2; 0 = off)", type=float),
        Option("--lambda-pn", "lambda_pn", "part-neighbour weight λ_pn (default 0.1; 0 = off)", type=float),
        Option("--lambda-cc", "lambda_cc", "global-consistency weight λ_cc (default 0.4; 0 = off)", type=float),
        Option("--no-icz", "lambda_icz", "switch off the instance contrastive loss on z", const=0.0),
        Option("--no-icf", "lambda_icf", "switch off the instance contrastive loss on f", const=0.0),
        Option("--cd-variant", "cd_variant", "form of L_cd: entropy (paper, default), soft, ed or spro", type=str),
        Option("--fusion", "fusion", "fusion φ(f, z) of L_cc: concat (default) or sum", type=str),
        Option("--n-neighbours", "n_neighbours", "N_k of L_pn (default 20; 0 = L_pn off)", type=int),
        Option("--preset", "preset", "sscq (default) or spq: the instance-contrastive terms alone (SPQ baseline)",
               type=str),
        Option("--geometry", "geometry", "cosine (default) or released: raw f, squared-distance soft "
               "quantization, a projection head", type=str),
    )

    def __init__(self, n_subspaces: int = 8, n_codewords: int = 16, *, embedding_dim: int | None = None,
                 epochs: int = 30, batch_size: int = 128, lr: float = 5e-4, log_every: int = LOG_EVERY,
                 weight_decay: float = 1e-5,
                 warmup_epochs: int = 10, backbone: str = "auto", image_shape: tuple[int, int] | None = None,
                 tau_sq: float = 0.2, lambda_icz: float = 1.0, lambda_icf: float = 1.0, tau_ic: float = 0.5,
                 lambda_pn: float = 0.1, n_neighbours: int = 20, tau_pn: float = 0.5,
                 lambda_cc: float = 0.4, tau_cc: float = 0.2, fusion: str = "concat", lambda_cd: float = 0.2,
                 cd_variant: str = "entropy", preset: str = "sscq", geometry: str = "cosine",
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.log_every = log_every
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.backbone = backbone
        self.image_shape = image_shape
        self.tau_sq = tau_sq
        self.lambda_icz = lambda_icz
        self.lambda_icf = lambda_icf
        self.tau_ic = tau_ic
        self.lambda_pn = lambda_pn
        self.n_neighbours = n_neighbours
        self.tau_pn = tau_pn
        self.lambda_cc = lambda_cc
        self.tau_cc = tau_cc
        self.fusion = fusion
        self.lambda_cd = lambda_cd
        self.cd_variant = cd_variant
        self.preset = preset
        self.geometry = geometry

    def _embedding_size(self) -> int:
        return SUB_DIM * self.n_subspaces if self.embedding_dim is None else self.embedding_dim

    @classmethod
    def grid_for_bits(cls, bits: int, dim: int) -> dict:
        """Zhang et al.'s setting: K=2^4=16 and D/M=16, so M=bits/4 and D=16·M (16, 32, 64 bits → M=4, 8, 16).

        Raises :class:`InvalidParameter` naming ``bits`` when it is not a positive multiple of 4.
        """
        M = check_bits(bits, 4, "4 bits per codebook, K=16") // 4
        return {"n_subspaces": M, "n_codewords": 16, "embedding_dim": SUB_DIM * M}

    def _validate(self, X, y):
        super()._validate(X, y)
        for name in ("tau_sq", "tau_ic", "tau_pn", "tau_cc"):
            if check_float(getattr(self, name), name, low=0.0) == 0.0:
                raise InvalidParameter(f"{name}=0 divides by zero; a temperature must be > 0 (paper: {name}=0.2–0.5)")
        for name in ("lambda_icz", "lambda_icf", "lambda_pn", "lambda_cc", "lambda_cd", "weight_decay"):
            check_float(getattr(self, name), name, low=0.0)
        if not any(self._weights().values()):
            raise InvalidParameter("every loss weight (lambda_icz, lambda_icf, lambda_pn, lambda_cc, lambda_cd) is 0; "
                                   "keep at least one term, e.g. lambda_icz=1")
        check_int(self.n_neighbours, "n_neighbours (N_k)", low=0, fix="the paper uses N_k=20 (0 switches L_pn off)")
        check_int(self.warmup_epochs, "warmup_epochs", low=0)
        if min(self.batch_size, len(X)) < 2:
            raise InvalidParameter("contrastive training needs at least 2 images per batch; pass more vectors")

    # ------------------------------------------------------------------ training
    def _view(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.image_shape_ is not None:
            return GreyAugment()(x, self.image_shape_, gen)
        return augment_vectors(x, gen)

    def _lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Learning-rate multiplier after ``step`` batches: linear warm-up to 1, then cosine decay
        to :data:`LR_FLOOR`."""
        total = self.epochs * steps_per_epoch
        warm = min(self.warmup_epochs, math.ceil(self.epochs / 10)) * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        cosine = 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return LR_FLOOR + (1.0 - LR_FLOOR) * cosine

    def _weights(self) -> dict[str, float]:
        """Effective weight of every loss term: the λs, with L_pn off when N_k = 0 (the supplement's
        Table 4 column "0") and only the instance-contrastive terms under ``preset="spq"``."""
        w = {t: float(getattr(self, f"lambda_{t}")) for t in LOSS_TERMS}
        if self.n_neighbours == 0:
            w["pn"] = 0.0
        if self.preset == "spq":
            w.update(pn=0.0, cc=0.0, cd=0.0)
        return w

    def _loss_terms(self, f: torch.Tensor, z: torch.Tensor, cosine: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted terms whose weight is not 0, by name; f, z (2N, D), cosine (2N, M, K)."""
        n = len(f) // 2
        weights, terms = self._weights(), {}
        if weights["icz"] or weights["icf"]:
            pf, pz = self.model_.project(f), self.model_.project(z)
        if weights["icz"]:
            terms["icz"] = nt_xent(pz[:n], pz[n:], self.tau_ic)
        if weights["icf"]:
            terms["icf"] = nt_xent(pf[:n], pf[n:], self.tau_ic)
        if weights["pn"]:
            terms["pn"] = part_neighbour_loss(z.reshape(2 * n, self.n_subspaces, -1), self.tau_pn, self.n_neighbours)
        if weights["cc"]:
            h = torch.cat([f, z], dim=1) if self.fusion == "concat" else f + z
            terms["cc"] = consistency_loss(h[:n], h[n:], self.tau_cc)
        if weights["cd"]:
            terms["cd"] = codeword_diversity(cosine, self.cd_variant, self.tau_sq)
        return terms

    def _make_model(self, dim: int, gen: torch.Generator) -> SSCQNet:
        M, D = self.n_subspaces, self._embedding_size()
        net = make_backbone(self.backbone, dim, D, self.image_shape_)
        return SSCQNet(net, M, self.n_codewords, D // M, gen, self.geometry).to(self.device_)

    def _fit(self, X, y, run):
        gen, _ = self._generators()
        Xt = self._prepare(X)
        M, K = self.n_subspaces, self.n_codewords
        self.model_ = model = self._make_model(X.shape[1], gen)
        weights = self._weights()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, len(Xt) // min(self.batch_size, len(Xt)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self._lr_factor(s, steps_per_epoch))
        self.codebooks_ = model.codebooks().detach().cpu().numpy()
        self.history_ = []
        start = self._resume_training(opt, sched)  # 0, or the checkpoint's epoch with its full training state
        warm = min(self.warmup_epochs, math.ceil(self.epochs / 10))

        def epoch_end(epoch, losses):
            self.history_.append(losses)
            if epoch == warm:
                run.note("warm-up", f"learning-rate warm-up done after epoch {epoch}; cosine decay from lr={self.lr:g}",
                         epoch=epoch, lr=self.lr)

        window = StepWindow(M, K)
        for _, idx in self._train_batches(run, len(Xt), gen, start, window, on_epoch_end=epoch_end,
                                          sample=lambda: self._embedding_sample(self.transform(X))):
            x = Xt[idx]
            f = model.embed(torch.cat([self._view(x, gen), self._view(x, gen)]))
            z, logits, cosine = model.quantize(f, self.tau_sq)
            terms = self._loss_terms(f, z, cosine)
            total = sum(weights[t] * v for t, v in terms.items())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            codes = logits.detach().argmax(-1)                            # (2N, M) hard codes
            window.add({"total": float(total.detach()), **{t: float(v.detach()) for t, v in terms.items()}},
                       codes=codes, soft_hard=lambda f=f, z=z, logits=logits, codes=codes: self._soft_hard(f, z, logits, codes))
        self.codebooks_ = model.codebooks().detach().cpu().numpy()
        model.eval()

    def _soft_hard(self, f, z, logits, codes) -> dict:
        """Soft-vs-hard discrepancy on the last batch (z against the nearest unit codewords)."""
        C = self.model_.codebooks().detach()
        hard = C[torch.arange(self.n_subspaces, device=codes.device)[None, :], codes].reshape(len(codes), -1)
        p = F.softmax(logits.detach() / self.tau_sq, dim=-1)
        return metrics.soft_hard_gap(z.detach().cpu().numpy(), hard.cpu().numpy(), p.cpu().numpy(), codes.cpu().numpy())

    # ------------------------------------------------------------------ report
    def extra_report(self, ds, evaluation: dict) -> dict:
        """``map_at_1000`` (the paper's second protocol) and the final epoch's loss terms."""
        out = {"loss_terms": self.history_[-1] if getattr(self, "history_", None) else {}}
        if ds.queries is not None and ds.labels is not None and ds.query_labels is not None:
            k = min(1000, len(evaluation["codes"]))
            _, ranking = adc_search(self.distance_tables(ds.queries), evaluation["codes"], k)
            out["map_at_1000"] = metrics.mean_average_precision(ranking, ds.query_labels, ds.labels, k=k)
        return out
