r"""The front door's training: per-template adapters and the CDC losses (torch).

:class:`~clip_invariance.FrontDoorEnsembleClassifier` imports this module,
and torch only when it trains (``max_iter > 0``): every torch import is inside
a function, so ``import clip_invariance`` stays free of torch. The losses
work on torch tensors, in float32, on CPU.

For template ``m`` with class embeddings :math:`w^m_c` (adapted and
normalised), opinion ``k`` pairs a template with a view, and

.. math::

    L = \underbrace{\sum_k \operatorname{mean}_i
            \left[\psi(S^k_i) - \psi(\alpha^k_{i, y_i})\right]}_{L_{tce}}
        + \beta L_{de} + \gamma L_{con}
        + \alpha \sum_m \operatorname{mean}_c \lVert w^m_c - p^m_c \rVert^2,

with :func:`trusted_cross_entropy`, :func:`decoupling_loss`,
:func:`consistency_loss` (the three terms of CDC's published loss) and
:func:`proximal_penalty` (to the training-free class embeddings ``p``; an
addition of this package); TMC's options, also additions, add the fused
opinion (:func:`fused_evidence`) to the ``k`` and an annealed
:func:`kl_to_uniform`. The maps act only inside a basis ``Q``: the span of
the prompts (``prompt_span``) less every direction the augmented views move
(``style_guard``, :func:`style_directions`), two more additions.
:func:`train_adapters` minimises it with Adam, its options the estimator's
training parameters (:class:`TrainingOptions`).
"""

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from ._adapters import TemplateAdapters
from ._evidence import EVIDENCE_FUNCTIONS

__all__ = [
    "EXP_CLIP",
    "torch_evidence",
    "trusted_cross_entropy",
    "decoupling_loss",
    "consistency_loss",
    "proximal_penalty",
    "TrainingOptions",
    "train_adapters",
    "fused_evidence",
    "kl_to_uniform",
    "validation_split",
    "style_directions",
]


# Training only: exp evidence is clipped at exp(60) ~ 1e26 in the float32
# training loop, so that C of them summed cannot overflow (float32 ends at
# 3e38). Inference works in log space and needs no clip.
EXP_CLIP = 60.0


def torch_evidence(scores, kind="softplus"):
    """The evidence ``h(scores)`` of :func:`log_evidence`, in torch, for training.

    exp evidence is clipped at ``exp(EXP_CLIP)`` so that float32 training
    cannot overflow; torch is imported only here.

    Parameters
    ----------
    scores : torch.Tensor
        Temperature-scaled similarities.
    kind : {"softplus", "relu", "exp"}, default="softplus"
        The evidence function ``h``.

    Returns
    -------
    evidence : torch.Tensor, same shape as ``scores``.
    """
    import torch

    if kind == "exp":
        return torch.exp(torch.clamp(scores, max=EXP_CLIP))
    if kind == "softplus":
        return torch.nn.functional.softplus(scores)
    if kind == "relu":
        return torch.relu(scores)
    raise ValueError(f"The evidence function must be one of {EVIDENCE_FUNCTIONS}, got {kind!r}.")


def trusted_cross_entropy(evidence, y):
    r"""``L_tce = sum_k mean_i [digamma(S^k_i) - digamma(alpha^k_{i, y_i})]``.

    The expected cross-entropy of a Dirichlet opinion ``alpha = e + 1``
    (Han et al., 2021), summed over the opinions.

    Parameters
    ----------
    evidence : torch.Tensor of shape (n_opinions, n_samples, n_classes)
    y : torch.Tensor of int64, shape (n_samples,)
        Class index of each sample.

    Returns
    -------
    loss : torch.Tensor, a scalar.
    """
    import torch

    alpha = evidence + 1.0
    strength = alpha.sum(dim=-1)
    alpha_y = alpha.gather(-1, y.expand(alpha.shape[0], -1)[..., None])[..., 0]
    return (torch.digamma(strength) - torch.digamma(alpha_y)).mean(dim=1).sum()


def fused_evidence(evidence):
    r"""Evidence of the fused opinion (reduced Dempster rule), in torch.

    ``e_c = C expm1(sum_k log1p(e^k_c / C))`` (:mod:`clip_invariance.front_door`),
    clipped at ``exp(EXP_CLIP)`` as :func:`torch_evidence` is.

    Parameters
    ----------
    evidence : torch.Tensor of shape (n_opinions, n_samples, n_classes)

    Returns
    -------
    evidence : torch.Tensor of shape (1, n_samples, n_classes)
    """
    import torch

    n_classes = evidence.shape[-1]
    total = torch.log1p(evidence / n_classes).sum(dim=0, keepdim=True)
    return n_classes * torch.expm1(torch.clamp(total, max=EXP_CLIP - float(np.log(n_classes))))


def kl_to_uniform(evidence, y):
    r"""TMC's KL term: ``sum_k mean_i KL(Dir(alpha~) || Dir(1))``.

    ``alpha~ = y + (1 - y) * alpha`` removes the true class's evidence, so the
    term penalises evidence for the wrong classes only (Han et al., 2021).

    Parameters
    ----------
    evidence : torch.Tensor of shape (n_opinions, n_samples, n_classes)
    y : torch.Tensor of int64, shape (n_samples,)

    Returns
    -------
    loss : torch.Tensor, a scalar.
    """
    import torch

    alpha = evidence + 1.0
    truth = torch.nn.functional.one_hot(y, alpha.shape[-1]).to(alpha.dtype)
    tilde = truth + (1.0 - truth) * alpha
    strength = tilde.sum(dim=-1)
    n_classes = alpha.shape[-1]
    kl = (
        torch.lgamma(strength) - math.lgamma(n_classes)
        - torch.lgamma(tilde).sum(dim=-1)
        + ((tilde - 1.0) * (torch.digamma(tilde) - torch.digamma(strength)[..., None])).sum(dim=-1)
    )
    return kl.mean(dim=1).sum()


def decoupling_loss(class_embeddings, temperature, reduction="mean"):
    r"""``L_de``: over ``m != m'`` and ``c``, ``sum_cbar P log P`` (negative entropy).

    ``P(cbar | w^m_c, w^{m'})`` is the softmax over classes ``cbar`` of
    ``temperature`` times the cosines of template ``m``'s class ``c`` with
    template ``m'``'s classes; lowering the loss pushes templates apart.

    Parameters
    ----------
    class_embeddings : torch.Tensor of shape (n_templates, n_classes, n_features)
        Normalised.
    temperature : float
    reduction : {"mean", "sum"}, default="mean"
        ``"mean"`` averages over the ordered pairs ``m != m'`` and the classes;
        ``"sum"`` sums over the templates ``m`` (and averages over ``m'`` and
        ``c``), ``M`` times the mean: the same ``beta`` weighs it ``M`` times
        more.

    Returns
    -------
    loss : torch.Tensor, a scalar (0 for a single template).
    """
    import torch

    n_templates = class_embeddings.shape[0]
    if n_templates < 2:
        return class_embeddings.new_zeros(())
    logits = temperature * torch.einsum("mcd,ned->mnce", class_embeddings, class_embeddings)
    log_p = torch.log_softmax(logits, dim=-1)
    neg_entropy = (log_p.exp() * log_p).sum(dim=-1).mean(dim=-1)  # (M, M)
    off_diagonal = ~torch.eye(n_templates, dtype=torch.bool)
    mean = neg_entropy[off_diagonal].mean()
    return mean * n_templates if reduction == "sum" else mean


def consistency_loss(class_embeddings, anchors, temperature):
    r"""``L_con = -(1/C) sum_m sum_c log P(c | w^m_c, w^0)``.

    Keeps every template's class ``c`` recognisable as class ``c`` among the
    anchor embeddings ``w^0`` (the hand-written prompts).

    Parameters
    ----------
    class_embeddings : torch.Tensor of shape (n_templates, n_classes, n_features)
        Normalised.
    anchors : torch.Tensor of shape (n_classes, n_features)
        Normalised anchor embeddings ``w^0``.
    temperature : float

    Returns
    -------
    loss : torch.Tensor, a scalar.
    """
    import torch

    logits = temperature * torch.einsum("mcd,ed->mce", class_embeddings, anchors)
    log_p = torch.log_softmax(logits, dim=-1)
    return -torch.diagonal(log_p, dim1=1, dim2=2).mean(dim=1).sum()


def proximal_penalty(class_embeddings, prompts):
    r"""``sum_m mean_c ||w^m_c - p^m_c||^2``: how far training moved the class embeddings.

    An addition of this package, not a term of CDC's loss.

    Parameters
    ----------
    class_embeddings : torch.Tensor of shape (n_templates, n_classes, n_features)
        Adapted, normalised class embeddings ``w``.
    prompts : torch.Tensor of shape (n_templates, n_classes, n_features)
        The training-free ones ``p`` (normalised prompt embeddings).

    Returns
    -------
    loss : torch.Tensor, a scalar.
    """
    return ((class_embeddings - prompts) ** 2).sum(dim=-1).mean(dim=1).sum()


@dataclass(frozen=True)
class TrainingOptions:
    """The estimator's training parameters: one field per constructor parameter of the same name.

    :class:`~clip_invariance.FrontDoorEnsembleClassifier` passes
    ``TrainingOptions.from_estimator(self)`` to :func:`train_adapters`, so
    its list of training parameters is this class's fields and nothing else.

    Attributes
    ----------
    evidence_function : {"softplus", "relu", "exp"}
        The evidence function ``h`` of every opinion (:func:`torch_evidence`).
    temperature : float
        Scale of the cosines, in the evidence and in the softmaxes of
        :func:`decoupling_loss` and :func:`consistency_loss`.
    beta : float
        Weight of :func:`decoupling_loss` (skipped at 0).
    decoupling_reduction : {"mean", "sum"}
        Its reduction over templates.
    gamma : float
        Weight of :func:`consistency_loss` (skipped at 0).
    fused_loss : bool
        Add the fused opinion (:func:`fused_evidence`) to the opinions whose
        :func:`trusted_cross_entropy` (and KL term) is summed.
    kl_annealing_epochs : int or None
        Add :func:`kl_to_uniform` weighted ``min(1, epoch / kl_annealing_epochs)``,
        epochs counted from 1; ``None``: no KL term.
    alpha : float
        Weight of :func:`proximal_penalty` (skipped at 0).
    rank : int or None
        Rank of each update (``A_m = L_m R_m^T``); ``None``: a full ``A_m``.
    prompt_span : bool
        Confine the updates to the span of the prompts and anchors.
    style_guard : bool
        Leave every direction with any style in it (:func:`style_directions`)
        out of the updates.
    learning_rate : float
        Adam's step size.
    batch_size : int
        Minibatch size, capped at the number of training rows.
    max_iter : int
        Maximum number of epochs.
    tol : float or None
        Minimum improvement of the monitored loss; ``None`` stops only on
        the held-out loss (with ``validation_fraction``), or never.
    n_iter_no_change : int
        Epochs without improvement before stopping.
    validation_fraction : float or None
        Hold out this fraction of the rows (or of the environments) and
        monitor their loss, keeping the best epoch's weights; ``None``:
        monitor the epoch's training loss.
    verbose : bool
        A progress bar (tqdm) over the epochs.
    """

    evidence_function: str
    temperature: float
    beta: float
    decoupling_reduction: str
    gamma: float
    fused_loss: bool
    kl_annealing_epochs: Optional[int]
    alpha: float
    rank: Optional[int]
    prompt_span: bool
    style_guard: bool
    learning_rate: float
    batch_size: int
    max_iter: int
    tol: Optional[float]
    n_iter_no_change: int
    validation_fraction: Optional[float]
    verbose: bool

    @classmethod
    def from_estimator(cls, estimator):
        """The options of ``estimator``: its parameters named as the fields."""
        return cls(**{option.name: getattr(estimator, option.name) for option in fields(cls)})


def train_adapters(views, y_idx, prompts, anchors, pairs, options, *, seed, environments=None):
    r"""Learn one adapter per template by Adam; returns (adapters, loss curve).

    Template ``m``'s map is :math:`W_m = I + Q A_m Q^\top`, with ``Q`` an
    orthonormal basis of the span of the prompts and anchors
    (``options.prompt_span``; else the whole space), less every direction with
    any style in it (``options.style_guard``, :func:`style_directions`; ``Q = I``
    with neither), and :math:`A_m` full or
    :math:`L_m R_m^\top` (``options.rank``). :math:`A_m` starts at zero (with
    ``rank``, ``L = 0`` and a random ``R``), so every map starts at the
    identity. Each minibatch step minimises (:meth:`_AdapterTrainer.loss`)

    .. math::

        L_{tce} + w_e \operatorname{KL} + \beta L_{de} + \gamma L_{con}
        + \alpha \sum_m \operatorname{mean}_c \lVert w^m_c - p^m_c \rVert^2,

    where :math:`L_{tce}` (and the KL term) sum over the opinions and, with
    ``options.fused_loss``, the fused opinion; the KL term, weighted
    :math:`w_e = \min(1, e / \text{kl\_annealing\_epochs})` at epoch ``e``
    (from 1), is there only with ``kl_annealing_epochs``; terms of weight 0
    are skipped. Early stopping monitors the held-out loss with
    ``options.validation_fraction`` (the best epoch's weights are kept), or
    else, with ``options.tol``, the epoch's training loss: it stops after
    ``n_iter_no_change`` epochs that did not improve on the best by ``tol``.

    Parameters
    ----------
    views : ndarray of shape (n_views, n_samples, n_features)
        Normalised view embeddings.
    y_idx : ndarray of int, shape (n_samples,)
        Class index of each sample.
    prompts : ndarray of shape (n_templates, n_classes, n_features)
        Normalised prompt embeddings ``p``.
    anchors : ndarray of shape (n_classes, n_features)
        Normalised anchor embeddings ``w^0``.
    pairs : ndarray of shape (n_opinions, 2)
        ``(template, view)`` of every opinion.
    options : TrainingOptions
        The estimator's training parameters.
    seed : int
        Seeds a local torch generator, drawn in this order: the initial
        ``R`` (with ``rank``), the validation split (with
        ``validation_fraction``), each epoch's minibatch order. Torch's
        global generator is not touched.
    environments : ndarray of shape (n_samples,) or None, default=None
        With ``validation_fraction``, hold out whole environments
        (:func:`validation_split`).

    Returns
    -------
    adapters : TemplateAdapters
        The maps ``W_m``, in ``views``' dtype, at their rank.
    loss_curve : list of float
        Mean training loss of each epoch run.
    """
    import torch
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(int(seed))
    trainer = _AdapterTrainer(views, y_idx, prompts, anchors, pairs, options, generator)
    n_samples = views.shape[1]
    if options.validation_fraction is None:
        train_rows = torch.arange(n_samples)
        held_out = None
    else:
        split = validation_split(n_samples, options.validation_fraction, environments, generator)
        train_rows, held_out = (torch.as_tensor(rows) for rows in split)
    monitored = held_out is not None or options.tol is not None
    stopping = _EarlyStopping(options.tol, options.n_iter_no_change) if monitored else None
    optimizer = torch.optim.Adam(trainer.weights, lr=options.learning_rate)
    batch_size = min(options.batch_size, len(train_rows))
    loss_curve = []
    best_weights = None
    # Redrawn at every epoch (an epoch is long enough), so the bar always shows the epochs run.
    bar = tqdm(total=options.max_iter, desc="Front-door training", unit="epoch", disable=not options.verbose,
               leave=False, mininterval=0, miniters=1)
    for epoch in range(options.max_iter):
        order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        epoch_loss = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = trainer.loss(rows, epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(rows)
        loss_curve.append(epoch_loss / len(order))
        bar.update()
        bar.set_postfix_str(f"loss {loss_curve[-1]:.4g}", refresh=False)
        if stopping is None:
            continue
        if held_out is None:
            score = loss_curve[-1]
        else:
            with torch.no_grad():
                score = trainer.loss(held_out, epoch).item()
        if stopping.improved(score):
            if held_out is not None:
                best_weights = trainer.copy_weights()
        elif stopping.exhausted:
            break
    bar.close()
    if best_weights is not None:
        trainer.set_weights(best_weights)
    return trainer.adapters(views.dtype), loss_curve


class _EarlyStopping:
    """Stop after ``n_iter_no_change`` epochs whose score did not beat the best by ``tol``."""

    def __init__(self, tol, n_iter_no_change):
        self.tol = 0.0 if tol is None else tol
        self.n_iter_no_change = n_iter_no_change
        self.best = np.inf
        self.stall = 0

    def improved(self, score):
        """Record an epoch's score; whether it is the new best."""
        if score < self.best - self.tol:
            self.best = score
            self.stall = 0
            return True
        self.stall += 1
        return False

    @property
    def exhausted(self):
        return self.stall >= self.n_iter_no_change


class _AdapterTrainer:
    """The adapters' weights and the training objective, on float32 tensors (CPU).

    See :func:`train_adapters` for the maps and the objective.
    """

    def __init__(self, views, y_idx, prompts, anchors, pairs, options, generator):
        import torch

        dtype = torch.float32
        self.options = options
        self.views = torch.as_tensor(views, dtype=dtype)
        self.prompts = torch.as_tensor(prompts, dtype=dtype)
        self.anchors = torch.as_tensor(anchors, dtype=dtype)
        self.y = torch.as_tensor(y_idx, dtype=torch.long)
        self.pair_templates = torch.as_tensor(pairs[:, 0], dtype=torch.long)
        self.pair_views = torch.as_tensor(pairs[:, 1], dtype=torch.long)
        self.basis = self._basis()
        self.weights = self._initial_weights(generator)

    def _basis(self):
        """``Q`` (D, K): an orthonormal basis of where the updates may act, or None for ``I``.

        The span of the prompts and anchors (``prompt_span``; their right singular vectors above 1e-6
        times the largest singular value) or the whole space, and of it, with ``style_guard``, the
        directions orthogonal to every style direction (:func:`style_directions`): a direction with
        any style in it is left out.
        """
        import torch

        dim = self.prompts.shape[-1]
        style = style_directions(self.views.double()) if self.options.style_guard else None
        if not self.options.prompt_span and style is None:
            return None
        basis = torch.eye(dim, dtype=torch.float64)
        if self.options.prompt_span:  # what a soft prompt can reach: the span of the prompts
            flat = torch.cat([self.prompts.reshape(-1, dim), self.anchors]).double()
            _, sv, vh = torch.linalg.svd(flat, full_matrices=False)
            basis = vh[sv > sv[0] * 1e-6].T
        if style is not None:  # of it, the directions with no style in them: the null space of S^T Q
            _, sv, vh = torch.linalg.svd(style.T @ basis, full_matrices=True)
            basis = basis @ vh[int((sv > 1e-6).sum()) :].T
        return basis.to(self.prompts.dtype)

    def _initial_weights(self, generator):
        """``[A]`` or ``[L, R]`` with ``A = L R^T = 0``: every map starts at the identity."""
        import torch

        n_templates = self.prompts.shape[0]
        k = self.prompts.shape[-1] if self.basis is None else self.basis.shape[1]
        dtype = self.prompts.dtype
        rank = self.options.rank
        if rank is None:
            return [torch.zeros(n_templates, k, k, dtype=dtype, requires_grad=True)]
        left = torch.zeros(n_templates, k, rank, dtype=dtype, requires_grad=True)
        right = torch.randn(n_templates, k, rank, generator=generator, dtype=dtype)
        return [left, (right / k**0.5).requires_grad_(True)]

    def _update(self):
        """``A_m`` (n_templates, K, K), in the basis' coordinates."""
        if self.options.rank is None:
            return self.weights[0]
        left, right = self.weights
        return left @ right.transpose(1, 2)

    def class_embeddings(self):
        """``w^m_c``: the prompts through ``W_m``, normalised."""
        import torch

        update_t = self._update().transpose(1, 2)
        if self.basis is not None:  # P (Q A Q^T)^T as (P Q) A^T Q^T: no (D, D) product per step
            adapted = self.prompts + (self.prompts @ self.basis) @ update_t @ self.basis.T
        else:
            adapted = self.prompts + self.prompts @ update_t
        return torch.nn.functional.normalize(adapted, dim=-1)

    def loss(self, rows, epoch):
        """The objective on the samples ``rows`` at ``epoch`` (from 0): one training step's loss."""
        import torch

        options = self.options
        t = options.temperature
        emb = self.class_embeddings()
        y = self.y[rows]
        scores = torch.bmm(self.views[:, rows][self.pair_views], emb[self.pair_templates].transpose(1, 2))
        opinions = torch_evidence(t * scores, options.evidence_function)
        if options.fused_loss:  # TMC: the fused opinion is one more opinion to train
            opinions = torch.cat([opinions, fused_evidence(opinions)])
        loss = trusted_cross_entropy(opinions, y)
        if options.kl_annealing_epochs is not None:
            loss = loss + min(1.0, (epoch + 1) / options.kl_annealing_epochs) * kl_to_uniform(opinions, y)
        if options.beta > 0:
            loss = loss + options.beta * decoupling_loss(emb, t, options.decoupling_reduction)
        if options.gamma > 0:
            loss = loss + options.gamma * consistency_loss(emb, self.anchors, t)
        if options.alpha > 0:  # class embeddings stay near the training-free ones
            loss = loss + options.alpha * proximal_penalty(emb, self.prompts)
        return loss

    def copy_weights(self):
        return [weight.detach().clone() for weight in self.weights]

    def set_weights(self, values):
        import torch

        with torch.no_grad():
            for weight, value in zip(self.weights, values):
                weight.copy_(value)

    def adapters(self, dtype):
        """The maps ``W_m = I + left_m right_m^T`` at their rank, in the embeddings' coordinates."""
        import torch

        with torch.no_grad():
            if self.options.rank is None:  # Q A Q^T = (Q A) Q^T
                left = self.weights[0]
                if self.basis is None:  # Q = I
                    right = torch.eye(left.shape[-1], dtype=left.dtype)
                else:
                    left, right = self.basis @ left, self.basis
            else:  # Q L R^T Q^T = (Q L) (Q R)^T
                left, right = self.weights
                if self.basis is not None:
                    left = self.basis @ left
                    right = self.basis @ right
        return TemplateAdapters.from_factors(left.detach().numpy(), right.detach().numpy(), dtype=dtype)


def style_directions(views):
    r"""An orthonormal basis (D, k) of the directions the augmented views move: the style.

    The right singular vectors of the differences ``views[v] - views[0]``
    (``v >= 1``) whose variance is above the mean variance of all ``D``
    directions: isotropic noise spreads evenly and falls below it, while a
    low-dimensional style stands above it. ``None`` with a single view (no
    differences to read a style from).

    Parameters
    ----------
    views : torch.Tensor of shape (n_views, n_samples, n_features)

    Returns
    -------
    basis : torch.Tensor of shape (n_features, k) or None
    """
    import torch

    if views.shape[0] < 2:
        return None
    differences = (views[1:] - views[:1]).reshape(-1, views.shape[-1])
    _, sv, vh = torch.linalg.svd(differences, full_matrices=False)
    variance = sv**2
    return vh[variance > variance.sum() / views.shape[-1]].T


def validation_split(n_samples, validation_fraction, environments, generator):
    """(train rows, held-out rows): a random fraction of the rows, or of whole environments.

    With ``environments``, ``round(validation_fraction * E)`` of the ``E``
    environments (at least one, at most ``E - 1``) are held out, so that the
    epoch is chosen on environments training has not seen. ``generator`` is
    a torch generator.
    """
    import torch

    if environments is None:
        order = torch.randperm(n_samples, generator=generator).numpy()
        n_val = min(max(1, round(validation_fraction * n_samples)), n_samples - 1)
        return order[n_val:], order[:n_val]
    names = np.unique(environments)
    if len(names) < 2:
        raise ValueError(
            f"Validation across environments needs at least 2 environments, got {len(names)} "
            f"({names.tolist()}): give more, or no environments for a random fraction of rows."
        )
    n_val = min(max(1, round(validation_fraction * len(names))), len(names) - 1)
    held_out = names[torch.randperm(len(names), generator=generator).numpy()[:n_val]]
    val = np.isin(environments, held_out)
    return np.flatnonzero(~val), np.flatnonzero(val)
