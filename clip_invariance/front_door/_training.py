r"""The front door's training: per-template adapters and the three CDC losses (torch).

:class:`~clip_invariance.FrontDoorEnsembleClassifier` imports this module,
and torch only when it trains (``max_iter > 0``): every torch import is inside
:func:`train_adapters`, so ``import clip_invariance`` stays free of torch.
The losses work on torch tensors, in float32, on CPU; the numpy helpers at
the end prepare the prompts and apply the learned maps.

For template ``m`` with class embeddings :math:`w^m_c` (adapted and
normalised), opinion ``k`` pairs a template with a view, and

.. math::

    L = \underbrace{\sum_k \operatorname{mean}_i
            \left[\psi(S^k_i) - \psi(\alpha^k_{i, y_i})\right]}_{L_{tce}}
        + \beta L_{de} + \gamma L_{con},

with :func:`trusted_cross_entropy`, :func:`decoupling_loss` and
:func:`consistency_loss`; :func:`train_adapters` minimises it with Adam.
"""

import math

import numpy as np

from ._adapters import TemplateAdapters
from ._evidence import EVIDENCE_FUNCTIONS

__all__ = [
    "EXP_CLIP",
    "torch_evidence",
    "trusted_cross_entropy",
    "decoupling_loss",
    "consistency_loss",
    "train_adapters",
    "fused_evidence",
    "kl_to_uniform",
    "validation_split",
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
    raise ValueError(f"evidence must be one of {EVIDENCE_FUNCTIONS}, got {kind!r}.")


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


def train_adapters(
    views,
    y_idx,
    prompts,
    anchors,
    pairs,
    *,
    seed,
    evidence,
    temperature,
    beta,
    gamma,
    rank,
    learning_rate,
    batch_size,
    max_iter,
    tol,
    n_iter_no_change,
    alpha=0.0,
    prompt_span=False,
    validation_fraction=None,
    environments=None,
    decoupling_reduction="mean",
    fused_loss=False,
    kl_annealing_epochs=None,
    verbose=False,
):
    """Adam on ``L_tce + beta L_de + gamma L_con``; returns (adapters, loss curve).

    Parameters
    ----------
    views : ndarray of shape (n_views, n_samples, n_features)
        Normalised view embeddings.
    y_idx : ndarray of int, shape (n_samples,)
        Class index of each sample.
    prompts : ndarray of shape (n_templates, n_classes, n_features)
        Normalised prompt embeddings.
    anchors : ndarray of shape (n_classes, n_features)
        Normalised anchor embeddings ``w^0``.
    pairs : ndarray of shape (n_opinions, 2)
        ``(template, view)`` of every opinion.
    seed : int
        Seeds a local torch generator (adapter initialisation, minibatch
        order, validation split); torch's global generator is not touched.
    environments : ndarray of shape (n_samples,) or None
        With ``validation_fraction``, hold out whole environments
        (:func:`validation_split`).
    evidence, temperature, beta, gamma, rank, learning_rate, batch_size, \
max_iter, tol, n_iter_no_change, verbose
        The estimator's parameters of the same names.

    Returns
    -------
    adapters : TemplateAdapters
        The maps ``W_m = I + update_m``, in ``views``' dtype, at their rank.
    loss_curve : list of float
        Mean loss of each epoch run.
    """
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    dtype = torch.float32
    views_t = torch.as_tensor(views, dtype=dtype)
    prompts_t = torch.as_tensor(prompts, dtype=dtype)
    anchors_t = torch.as_tensor(anchors, dtype=dtype)
    y_t = torch.as_tensor(y_idx, dtype=torch.long)
    pair_m = torch.as_tensor(pairs[:, 0], dtype=torch.long)
    pair_v = torch.as_tensor(pairs[:, 1], dtype=torch.long)
    n_templates, _, dim = prompts.shape
    n = views_t.shape[1]

    # With prompt_span the update lives in the span of the prompts (what a soft prompt can reach):
    # basis Q (D, K) and update Q A Q^T with a (K, K) or rank-r A.
    if prompt_span:
        flat = torch.cat([prompts_t.reshape(-1, dim), anchors_t])
        _, sv, vh = torch.linalg.svd(flat.double(), full_matrices=False)
        basis = vh[sv > sv[0] * 1e-6].T.to(dtype)
    else:
        basis = torch.eye(dim, dtype=dtype)
    k = basis.shape[1]
    # Updates start at zero, so every adapter starts at the identity.
    if rank is None:
        delta = torch.zeros(n_templates, k, k, dtype=dtype, requires_grad=True)
        weights = [delta]

        def inner():
            return delta
    else:
        left = torch.zeros(n_templates, k, rank, dtype=dtype, requires_grad=True)
        right = torch.randn(n_templates, k, rank, generator=generator, dtype=dtype)
        right = (right / k**0.5).requires_grad_(True)
        weights = [left, right]

        def inner():
            return left @ right.transpose(1, 2)

    def update():
        return basis @ inner() @ basis.T if prompt_span else inner()

    def class_embeddings():
        if prompt_span:  # P (Q A Q^T)^T as (P Q) A^T Q^T: no (D, D) product per step
            adapted = prompts_t + (prompts_t @ basis) @ inner().transpose(1, 2) @ basis.T
        else:
            adapted = prompts_t + prompts_t @ update().transpose(1, 2)
        return torch.nn.functional.normalize(adapted, dim=-1)

    def batch_loss(idx, emb, epoch):
        scores = torch.bmm(views_t[:, idx][pair_v], emb[pair_m].transpose(1, 2))
        opinions = torch_evidence(t * scores, evidence)
        if fused_loss:  # TMC: the fused opinion is one more opinion to train
            opinions = torch.cat([opinions, fused_evidence(opinions)])
        loss = trusted_cross_entropy(opinions, y_t[idx])
        if kl_annealing_epochs is not None:
            loss = loss + min(1.0, (epoch + 1) / kl_annealing_epochs) * kl_to_uniform(opinions, y_t[idx])
        if beta > 0:
            loss = loss + beta * decoupling_loss(emb, t, decoupling_reduction)
        if gamma > 0:
            loss = loss + gamma * consistency_loss(emb, anchors_t, t)
        if alpha > 0:  # proximal: class embeddings stay near the training-free ones
            loss = loss + alpha * ((emb - prompts_t) ** 2).sum(dim=-1).mean(dim=1).sum()
        return loss

    if validation_fraction is not None:  # (drawn only then: the minibatch order stays reproducible)
        train_idx, val_idx = (
            torch.as_tensor(i) for i in validation_split(n, validation_fraction, environments, generator)
        )
    else:
        train_idx = torch.arange(n)
    n_train = len(train_idx)
    optimizer = torch.optim.Adam(weights, lr=learning_rate)
    batch_size = min(batch_size, n_train)
    t = temperature
    loss_curve, best, stall, best_weights = [], np.inf, 0, None
    from tqdm.auto import tqdm

    # Redrawn at every epoch (an epoch is long enough), so the bar always shows the epochs run.
    bar = tqdm(total=max_iter, desc="Front-door training", unit="epoch", disable=not verbose, leave=False,
               mininterval=0, miniters=1)
    for epoch in range(max_iter):
        order = train_idx[torch.randperm(n_train, generator=generator)]
        epoch_loss = 0.0
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            loss = batch_loss(idx, class_embeddings(), epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(idx)
        loss_curve.append(epoch_loss / n_train)
        bar.update()
        bar.set_postfix_str(f"loss {loss_curve[-1]:.4g}", refresh=False)
        if validation_fraction is not None:  # early stopping on the held-out loss, best weights kept
            with torch.no_grad():
                score = batch_loss(val_idx, class_embeddings(), epoch).item()
            if score < best - (0.0 if tol is None else tol):
                best, stall = score, 0
                best_weights = [w.detach().clone() for w in weights]
            else:
                stall += 1
                if stall >= n_iter_no_change:
                    break
        elif tol is not None:
            if loss_curve[-1] < best - tol:
                best, stall = loss_curve[-1], 0
            else:
                stall += 1
                if stall >= n_iter_no_change:
                    break

    if best_weights is not None:
        with torch.no_grad():
            for w, b in zip(weights, best_weights):
                w.copy_(b)
    bar.close()
    # Stored at their rank, in the views' precision: W_m = I + left_m right_m^T.
    with torch.no_grad():
        if rank is None:
            left, right = (basis @ delta, basis) if prompt_span else (delta, torch.eye(dim))
        else:
            left, right = (basis @ left, basis @ right) if prompt_span else (left, right)
    adapters = TemplateAdapters.from_factors(left.detach().numpy(), right.detach().numpy(),
                                             dtype=views.dtype)
    return adapters, loss_curve


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
