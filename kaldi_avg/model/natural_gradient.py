"""Kaldi's online natural-gradient preconditioner (NG-SGD; Povey, Zhang & Khudanpur 2015).

`OnlineNaturalGradient` reproduces `src/nnet3/natural-gradient-online.{h,cc}`: it keeps an
online estimate of the scatter ("Fisher matrix") of the row vectors it is given,

    F_t = R_t^T D_t R_t + rho_t I        (R_t: rank x dim with orthonormal rows, D_t diagonal)

and maps a minibatch X_t (rows = vectors) to

    X_hat_t = beta_t X_t G_t^{-1},   G_t = F_t + alpha/dim tr(F_t) I,   beta_t = rho_t + alpha/dim tr(F_t),

computed as X_t - (X_t W_t^T) W_t with W_t = E_t^{1/2} R_t (Woodbury), together with the scale
gamma_t = sqrt(tr(X X^T) / tr(X_hat X_hat^T)) that restores the Frobenius norm (the caller
multiplies it into the learning rate). Every `update_period` minibatches (every minibatch for the
first 10) the estimate takes one power-method step towards T_t = eta S_t + (1-eta) F_t, where
S_t = X_t^T X_t / N and eta = 1 - exp(-N / num_samples_history) (at most 0.9).

Precision and placement follow Kaldi: the data-sized products (N x dim: H_t, X_hat_t, J_t, K_t,
L_t, W_{t+1}) are computed in the data's dtype (float32 in training; Kaldi's BaseFloat) on the
data's device, as Kaldi does them with CuMatrix<BaseFloat>; Z_t and the small rank x rank algebra
(eigendecomposition, Cholesky), d_t and rho_t are float64 on the CPU, as Kaldi computes Z_t in
double on the CPU. The output has the input's dtype.

The state is ordinary Python attributes, not module buffers or parameters: Kaldi never writes it
to a model file, averaging does not touch it, and each nnet3-train job starts with a fresh one
(`reset()`), initialized from the first minibatch it sees.

`NaturalGradientPass` and `natural_gradient_params` connect the preconditioner to autograd for
the components that use it (see `kaldi_avg/model/ops.py`).
"""
from __future__ import annotations

import math

import torch

EPSILON = 1.0e-10        # absolute floor on rho_t and on d_t (Kaldi's epsilon_)
DELTA = 5.0e-4           # floor on rho_t and d_t relative to the largest sqrt(c_t) (Kaldi's delta_)
NUM_INITIAL_UPDATES = 10  # the estimate is updated on each of the first 10 minibatches
CONDITION_THRESHOLD = 1.0e6
ORTHOGONALITY_THRESHOLD = 1.0e-3


class OnlineNaturalGradient:
    """One preconditioner (one side of one component). Kaldi's constructor defaults: rank 40,
    update period 1, num-samples-history 2000, alpha 4; components set their own values.
    `num_minibatches_history` > 0 (convolutions, whose rows are not frames) fixes eta at
    1/num_minibatches_history in place of the per-row decay (OnlineNaturalGradient::Eta)."""

    def __init__(self, rank: int = 40, update_period: int = 1, num_samples_history: float = 2000.0,
                 alpha: float = 4.0, num_minibatches_history: float = 0.0):
        if rank <= 0 or update_period <= 0:
            raise ValueError(f"rank ({rank}) and update_period ({update_period}) must be > 0")
        if not 0.0 < num_samples_history < 1.0e6:
            raise ValueError(f"num_samples_history must be in (0, 1e6), got {num_samples_history}")
        if num_minibatches_history != 0.0 and not 1.0 < num_minibatches_history < 1.0e6:
            raise ValueError(f"num_minibatches_history must be 0 or in (1, 1e6), got {num_minibatches_history}")
        if alpha < 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.configured_rank = int(rank)
        self.update_period = int(update_period)
        self.num_samples_history = float(num_samples_history)
        self.num_minibatches_history = float(num_minibatches_history)
        self.alpha = float(alpha)
        self.frozen = False
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the estimate: the next minibatch re-initializes it (a fresh nnet3-train job)."""
        self.rank = self.configured_rank
        self.t = 0                     # number of minibatches preconditioned so far
        self.W: torch.Tensor | None = None   # W_t = E_t^{1/2} R_t, rank x dim, data's dtype and device
        self.d: torch.Tensor | None = None   # diagonal of D_t, float64, CPU
        self.rho = 0.0

    @property
    def initialized(self) -> bool:
        return self.W is not None

    def eta(self, num_rows: int) -> float:
        if self.num_minibatches_history > 0.0:
            return 1.0 / self.num_minibatches_history
        return min(0.9, 1.0 - math.exp(-num_rows / self.num_samples_history))

    def _updating(self) -> bool:
        return not self.frozen and (self.t <= NUM_INITIAL_UPDATES
                                    or (self.t - NUM_INITIAL_UPDATES) % self.update_period == 0)

    def _beta(self, rho: float, d: torch.Tensor, dim: int) -> float:
        """beta = rho + alpha/dim tr(F) = rho (1 + alpha) + alpha/dim tr(D)."""
        return rho * (1.0 + self.alpha) + self.alpha * float(d.sum()) / dim

    @staticmethod
    def _e(d: torch.Tensor, beta: float) -> torch.Tensor:
        """Diagonal of E = (1/beta) (D^{-1} + I/beta)^{-1}: e_i = 1 / (beta/d_i + 1)."""
        return 1.0 / (beta / d + 1.0)

    def fisher(self) -> torch.Tensor:
        """The current estimate F_t = R^T D R + rho I (dim x dim, float64), for inspection/tests."""
        if self.W is None:
            raise RuntimeError("the preconditioner has not seen any data yet")
        D = self.W.shape[1]
        e = self._e(self.d, self._beta(self.rho, self.d, D)).to(self.W.device)
        R = self.W.double() / e.sqrt()[:, None]
        return R.t() @ (self.d.to(R.device)[:, None] * R) + \
            self.rho * torch.eye(D, dtype=torch.float64, device=R.device)

    def _init_default(self, dim: int, dtype: torch.dtype, device) -> None:
        if self.rank >= dim:
            self.rank = dim - 1
        R = self.rank
        # R_0: row r has entries at columns r, r+R, r+2R, ...; the first is 1.1, the others 1
        # (symmetry breaking), normalized to unit length. Rows are disjoint, hence orthonormal.
        W = torch.zeros(R, dim, dtype=torch.float64)
        for r in range(R):
            cols = list(range(r, dim, R))
            norm = 1.0 / math.sqrt(1.1 * 1.1 + len(cols) - 1)
            W[r, cols] = norm
            W[r, r] = 1.1 * norm
        # rho_0 = d_0 = epsilon, for which e_i = 1 / (2 + alpha (dim + R) / dim).
        self.rho = EPSILON
        self.d = torch.full((R,), EPSILON, dtype=torch.float64)
        self.W = (W * math.sqrt(1.0 / (2.0 + (dim + R) * self.alpha / dim))).to(device, dtype)

    def _init(self, X0: torch.Tensor) -> None:
        """Kaldi's Init: from the default start, a few updates on the first minibatch itself (3,
        or 1 if it has no more rows than the rank), then the real first call follows."""
        self._init_default(X0.shape[1], X0.dtype, X0.device)
        saved_t, saved_frozen = self.t, self.frozen
        self.t, self.frozen = 1, False
        num_iters = 1 if X0.shape[0] <= self.rank else 3
        tr_X0 = _sum_sq(X0)
        for _ in range(num_iters):
            self._precondition(X0, tr_X0, output=False)
        self.t, self.frozen = saved_t, saved_frozen

    # -- the preconditioning ------------------------------------------------------------------
    @torch.no_grad()
    def precondition(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (X_hat, gamma): X_hat = X - X W^T W (same dtype as X) and the scale that gives
        gamma * X_hat the Frobenius norm of X, a 0-dim tensor of X's dtype on X's device (no host
        synchronization unless the estimate is updated). Updates the estimate when due. X: (N, dim)."""
        if X.dim() != 2:
            raise ValueError(f"expected a matrix of row vectors, got shape {tuple(X.shape)}")
        one = torch.ones((), dtype=X.dtype, device=X.device)
        if X.shape[1] == 1 or X.shape[0] == 0:
            return X.clone(), one   # dim 1: the rescaled natural gradient is the identity
        if self.t == 0:
            self._init(X)
        initial = _sum_sq(X)
        X_hat = self._precondition(X, initial)
        self.t += 1
        final = _sum_sq(X_hat)
        scale = torch.where((initial > 0.0) & (final > 0.0), torch.sqrt(initial / final), one)
        return X_hat, scale

    def _precondition(self, X: torch.Tensor, tr_X: torch.Tensor, output: bool = True) -> torch.Tensor | None:
        """One minibatch with tr_X = tr(X X^T) (a 0-dim tensor on X's device); `output=False`: only
        the estimate's update (Init's iterations, whose X_hat nobody reads), None returned."""
        N, D = X.shape
        R = self.rank
        W_t, d_t, rho_t = self.W.to(X.dtype), self.d, self.rho
        H = X @ W_t.t()                                   # N x R
        X_hat = torch.addmm(X, H, W_t, alpha=-1.0) if output else None   # X - H W_t
        if not self._updating():
            return X_hat
        eta = self.eta(N)
        J = H.t() @ X                                     # R x D  = W X^T X
        L = H.t() @ H                                     # R x R  = W X^T X W^T
        K = J @ J.t()                                     # R x R
        # the small algebra runs on the CPU: one device-to-host copy for all it needs
        host = torch.cat([L.reshape(-1), K.reshape(-1), tr_X.reshape(1)]).cpu().double()
        L, K, tr_X = host[:R * R].view(R, R), host[R * R:2 * R * R].view(R, R), float(host[-1])
        L = 0.5 * (L + L.t())
        K = 0.5 * (K + K.t())
        beta_t = self._beta(rho_t, d_t, D)
        e_t = self._e(d_t, beta_t)
        inv_sqrt_e = 1.0 / e_t.sqrt()
        # Z_t = Y_t Y_t^T with Y_t = eta/N R_t X^T X + (1 - eta)(D_t + rho_t I) R_t, in terms of K, L.
        etaN, eta1 = eta / N, 1.0 - eta
        dr = d_t + rho_t
        L_s = inv_sqrt_e[:, None] * L * inv_sqrt_e[None, :]
        Z = (etaN * etaN) * (inv_sqrt_e[:, None] * K * inv_sqrt_e[None, :]) \
            + (etaN * eta1) * (L_s * dr[None, :] + dr[:, None] * L_s) \
            + torch.diag(eta1 * eta1 * dr * dr)
        z_scale = max(1.0, float(torch.trace(Z)))
        c, U = torch.linalg.eigh(Z / z_scale)
        c, U = c.flip(0) * z_scale, U.flip(1)             # eigenvalues largest first
        must_reorthogonalize = bool(c[0] > CONDITION_THRESHOLD * c[R - 1])
        c_floor = (rho_t * (1.0 - eta)) ** 2
        if bool((c < c_floor).any()):
            must_reorthogonalize = True
            c = c.clamp(min=c_floor)
        sqrt_c = c.sqrt()
        # rho_{t+1} keeps tr(F_{t+1}) = tr(T_t); D_{t+1} = C_t^{1/2} - rho_{t+1} I; both floored.
        rho_t1 = (etaN * tr_X + eta1 * (D * rho_t + float(d_t.sum())) - float(sqrt_c.sum())) / (D - R)
        d_t1 = sqrt_c - rho_t1
        floor_val = max(EPSILON, DELTA * float(sqrt_c.max()))
        rho_t1 = max(rho_t1, floor_val)
        d_t1 = d_t1.clamp(min=floor_val)
        # W_{t+1} = E_{t+1}^{1/2} R_{t+1}, R_{t+1} = C_t^{-1/2} U_t^T Y_t, factored as A_t B_t.
        beta_t1 = self._beta(rho_t1, d_t1, D)
        sqrt_e_t1 = self._e(d_t1, beta_t1).sqrt()
        # host-to-device copies from pageable memory need not wait for the device's queue
        B = J + ((eta1 / etaN) * dr).to(J.device, J.dtype, non_blocking=True)[:, None] * W_t
        A = etaN * (sqrt_e_t1 / sqrt_c)[:, None] * U.t() * inv_sqrt_e[None, :]
        W_t1 = A.to(B.device, B.dtype, non_blocking=True) @ B
        if must_reorthogonalize:
            W_t1 = self._reorthogonalize(W_t1, sqrt_e_t1)
        self.W, self.d, self.rho = W_t1, d_t1, rho_t1
        return X_hat

    @staticmethod
    def _reorthogonalize(W: torch.Tensor, sqrt_e: torch.Tensor) -> torch.Tensor:
        """Makes R = E^{-1/2} W orthonormal again when round-off has spoiled it: R <- C^{-1} R with
        O = R R^T = C C^T (Cholesky; the leading, larger directions are kept), or Gram-Schmidt if
        the Cholesky factor is unusable."""
        inv_sqrt_e = 1.0 / sqrt_e
        O = inv_sqrt_e[:, None] * (W @ W.t()).cpu().double() * inv_sqrt_e[None, :]  # noqa: E741 - Kaldi's name
        eye = torch.eye(O.shape[0], dtype=O.dtype, device=O.device)
        if float((O - eye).abs().max()) <= ORTHOGONALITY_THRESHOLD:
            return W
        Cinv = None
        try:
            C = torch.linalg.cholesky(O)
            Cinv = torch.linalg.solve_triangular(C, eye, upper=False)
            if not bool(Cinv.max() < 100.0) or not bool(torch.isfinite(Cinv).all()):
                Cinv = None
        except RuntimeError:
            Cinv = None
        if Cinv is None:
            Q, _ = torch.linalg.qr(W.t())                 # Gram-Schmidt on the rows of W
            R_rows = Q.t()
            sign = torch.sign(torch.sum(R_rows * W, dim=1))
            sign[sign == 0] = 1.0
            return sqrt_e.to(W.device, W.dtype)[:, None] * (sign[:, None] * R_rows)
        return (sqrt_e[:, None] * Cinv * inv_sqrt_e[None, :]).to(W.device, W.dtype) @ W


def _sum_sq(X: torch.Tensor) -> torch.Tensor:
    """tr(X X^T) as a 0-dim tensor: one dot product, without the temporary of (X ** 2).sum()."""
    flat = X.reshape(-1)
    return torch.dot(flat, flat)


# -- autograd plumbing ------------------------------------------------------------------------
class NaturalGradientPass:
    """What one component needs to replace its plain parameter gradient by Kaldi's natural-gradient
    update for one forward/backward computation.

    The parameters are routed through `natural_gradient_params`, so autograd first sums the plain
    gradients of every use of them in the computation (batched calls and per-frame calls inside
    recurrent loops alike) and then calls `gradients()` once, as Kaldi's model-update
    consolidation calls the component's Update once per minibatch with all rows. `record(x, y)`
    keeps the input rows of one use and (by a hook on y) the derivative rows w.r.t. its output;
    rows whose frame is before `min_deriv_time` or after `max_deriv_time` are left out, as Kaldi
    does not backpropagate them. `compute(records, plain_grads)` returns the gradients to use."""

    def __init__(self, compute, min_deriv_time: int | None = None, max_deriv_time: int | None = None):
        self.compute = compute
        self.min_deriv_time = min_deriv_time
        self.max_deriv_time = max_deriv_time
        self.inputs: list[torch.Tensor] = []
        self.derivs: list[torch.Tensor | None] = []

    def record(self, x: torch.Tensor, y: torch.Tensor, first_frame: int | None = None, stride: int = 1) -> None:
        """Keeps the rows of one use: `x` (N, dim), or (N, T, dim) on frames first_frame,
        first_frame + stride, ..., of which those outside [min_deriv_time, max_deriv_time] are
        left out (host integers: no read of the device)."""
        if not y.requires_grad:
            return
        frames = slice(None)
        if x.dim() == 3 and first_frame is not None:
            T = x.shape[1]
            lo = 0 if self.min_deriv_time is None else max(0, -(-(self.min_deriv_time - first_frame) // stride))
            hi = T if self.max_deriv_time is None else min(T, (self.max_deriv_time - first_frame) // stride + 1)
            if lo >= hi:
                return
            frames = slice(lo, hi)
        i = len(self.inputs)
        self.inputs.append((x.detach()[:, frames] if x.dim() == 3 else x.detach()).reshape(-1, x.shape[-1]))
        self.derivs.append(None)

        def hook(g, i=i):
            g = g.detach()[:, frames] if g.dim() == 3 else g.detach()
            self.derivs[i] = g.reshape(-1, g.shape[-1])
        y.register_hook(hook)

    def add_rows(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """Input and derivative rows of uses that the caller backpropagated itself (a fused
        recurrent loop, `lstm_loop.py`): (M, input dim) and (M, output dim)."""
        self.inputs.append(x.detach())
        self.derivs.append(g.detach())

    def rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(in_value rows, out_deriv rows) of every recorded use that was backpropagated."""
        pairs = [(x, g) for x, g in zip(self.inputs, self.derivs) if g is not None]
        if not pairs:
            return None
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([x for x, _ in pairs]), torch.cat([g for _, g in pairs])


class _NaturalGradientParams(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ng_pass, *params):
        ctx.ng_pass = ng_pass
        # returned as they are: autograd makes them views with this node as their grad_fn (no copy)
        return tuple(params)

    @staticmethod
    def backward(ctx, *grads):
        ng_pass = ctx.ng_pass
        ctx.ng_pass = None
        return (None,) + tuple(ng_pass.compute(ng_pass, grads))


def natural_gradient_params(ng_pass: NaturalGradientPass, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Copies of `params` whose gradient (summed over all uses) is replaced by
    `ng_pass.compute(ng_pass, plain_grads)` when backpropagated."""
    return _NaturalGradientParams.apply(ng_pass, *params)
