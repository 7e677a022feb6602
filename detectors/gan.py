"""GAN-based detectors: PyOD's SO-GAAL and MO-GAAL, and a Reptile meta-initialised discriminator.

:class:`SOGAALDetector` and :class:`MOGAALDetector` wrap PyOD's generative adversarial
active learning models (Liu et al., "Generative adversarial active learning for
unsupervised outlier detection", IEEE TKDE 2019).  PyOD 3.6's ``decision_function``
returns the discriminator's probability that a row is *real*, which is higher for normal
rows (the opposite of PyOD's own convention); the wrappers score the discriminator's
"not real" logit instead, ``-logit D(x)``, which is also free of the ties a saturated
sigmoid gives in float32.  Their per-epoch prints are silenced.  AnoGAN is not wrapped:
it optimises a latent code per scored row, far too slow for 10,000-row targets on a CPU.

:class:`MetaGANDetector` follows the GAN-based meta-learning idea of the project's sources
(a generator and a discriminator trained adversarially, adapted quickly to a new task):

1. **Meta-training** (Reptile, Nichol et al. 2018, with :func:`anomaly_gym.meta.reptile.reptile_update`
   as its update rule).  Every meta-iteration draws one source task, copies the
   meta-parameters of the generator and the discriminator, runs ``inner_steps``
   adversarial steps on that task's normal rows, and moves the meta-parameters
   ``meta_lr`` of the way toward the adapted ones.
2. **Fine-tuning** on the target: ``finetune_steps`` adversarial steps starting from the
   meta-parameters, with the target's unlabelled rows as the real batch.
3. **Score**: the discriminator's "not normal" logit, ``-logit D(x)`` (``D(x)`` is the
   probability that ``x`` is a real, normal row); higher = more anomalous.

:class:`ScratchGANDetector` is the same network and the same fine-tuning from a random
initialisation: the comparison that isolates what the meta-initialisation brings.

Each adversarial step (on a task's rows standardised with their own median / IQR):

- the discriminator minimises ``BCE(D(real), 1) + BCE(D(fake), 0)``, where the fake batch
  is the generator's samples plus a share ``background`` of rows drawn uniformly from the
  task's bounding box widened by half its range.  The uniform rows are the classic
  reference distribution of one-class classification by classification (Steinwart, Hush
  & Scovel, JMLR 2005; Hempstalk, Frank & Witten, ECML 2008): without them, a
  discriminator only ever sees fakes where the generator puts them, and its output far
  from the data (where the anomalies are) is arbitrary;
  In meta-training, a source with labels also adds its labelled anomalies to the fake
  batch (``source_anomalies``): across tasks, the discriminator learns what "not normal"
  looks like in the shared space, which is what the target's few unlabelled fine-tuning
  steps start from;
- the generator minimises ``BCE(D(G(z)), 1)`` (the non-saturating loss).

Inputs are width-independent across datasets as in the transfer baselines
(:class:`~anomaly_gym.detectors.transfer.TransferDetector`): with sources of another
width, every dataset goes through its own :class:`~anomaly_gym.envs.features.Featurizer`
(``feature_space="features"``, of fixed width); see :mod:`anomaly_gym.detectors.transfer`.
"""

from __future__ import annotations

import numpy as np
from anomaly_gym.detectors._torch import resolve_device, seed_int, seeded
from anomaly_gym.detectors.base import SourceData
from anomaly_gym.detectors.pyod_baselines import PyODDetector, _quiet
from anomaly_gym.detectors.transfer import TransferDetector, _check_positive, _normal_rows, _scaler
from anomaly_gym.envs.features import FeaturizerConfig


class _GAALDetector(PyODDetector):
    """Shared part of the GAAL wrappers: seeded fit, score = the discriminator's "not real" logit.

    The generators map uniform noise on ``[0, 1]^d`` through identity-initialised ReLU
    layers, so their samples start in the unit cube: rows are min-max scaled with the
    training rows' statistics before PyOD sees them (a no-op on the benchmark's already
    min-max scaled splits).

    Attributes:
        scaler_: The min-max scaler of the training rows.
        discriminator_: The fitted discriminator's layers (without the final sigmoid).
    """

    _uses_torch = True

    def _fit(self, X, y, source) -> None:
        import torch
        from sklearn.preprocessing import MinMaxScaler
        from torch import nn

        if not isinstance(self.stop_epochs, (int, np.integer)) or self.stop_epochs < 1:
            raise ValueError(f"stop_epochs must be a positive int, got {self.stop_epochs!r}")
        self.scaler_ = MinMaxScaler().fit(X)
        with seeded(seed_int(self.random_state)), _quiet():
            model = self._build(*X.shape)
            model.fit(self.scaler_.transform(X))
            # PyOD's MO-GAAL discriminator is a class local to a function (it cannot be
            # pickled): keep a copy of its two layers instead of the PyOD model.
            disc = model.discriminator.cpu()
            self.discriminator_ = nn.Sequential(nn.Linear(disc.layer1.in_features, disc.layer1.out_features), nn.ReLU(), nn.Linear(disc.layer2.in_features, 1))
        with torch.no_grad():
            self.discriminator_[0].load_state_dict(disc.layer1.state_dict())
            self.discriminator_[2].load_state_dict(disc.layer2.state_dict())
        self.discriminator_.eval()
        self.decision_scores_ = self._decision_function(X)

    def _decision_function(self, X):
        import torch

        with torch.no_grad():
            x = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32)
            logit = self.discriminator_(x).reshape(-1)
        return -logit.double().numpy()


class SOGAALDetector(_GAALDetector):
    """Single-objective generative adversarial active learning, ``pyod.models.so_gaal.SO_GAAL``.

    One generator is trained against the discriminator for ``stop_epochs`` epochs, then
    frozen while the discriminator trains ``2 * stop_epochs`` more epochs on its samples
    (batches of up to 500 rows, SGD with momentum).  PyOD's defaults otherwise.

    Args:
        stop_epochs: Epochs with the generator training (3x as many in total).
        lr_d: Discriminator learning rate.
        lr_g: Generator learning rate.
        momentum: SGD momentum.
        random_state: Seed of the weights, the noise and the batches.
    """

    def __init__(self, stop_epochs: int = 20, lr_d: float = 0.01, lr_g: float = 1e-4, momentum: float = 0.9, random_state: int | None = 0):
        self.stop_epochs = stop_epochs
        self.lr_d = lr_d
        self.lr_g = lr_g
        self.momentum = momentum
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        from pyod.models.so_gaal import SO_GAAL

        return SO_GAAL(stop_epochs=self.stop_epochs, lr_d=self.lr_d, lr_g=self.lr_g, momentum=self.momentum)


class MOGAALDetector(_GAALDetector):
    """Multiple-objective generative adversarial active learning, ``pyod.models.mo_gaal.MO_GAAL``.

    ``k`` sub-generators, each aiming at another quantile of the discriminator's output on
    the training rows, so that together they surround the data.  Runs on the CPU (PyOD
    picks CUDA when it sees it; here the fitted model must score on the CPU anyway).

    Args:
        k: Sub-generators.
        stop_epochs: Epochs with the generators training (3x as many in total).
        lr_d: Discriminator learning rate.
        lr_g: Generators' learning rate.
        momentum: SGD momentum.
        random_state: Seed of the weights, the noise and the batches.
    """

    def __init__(self, k: int = 10, stop_epochs: int = 20, lr_d: float = 0.01, lr_g: float = 1e-4, momentum: float = 0.9, random_state: int | None = 0):
        self.k = k
        self.stop_epochs = stop_epochs
        self.lr_d = lr_d
        self.lr_g = lr_g
        self.momentum = momentum
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        import torch
        from pyod.models.mo_gaal import MO_GAAL

        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        model = MO_GAAL(k=self.k, stop_epochs=self.stop_epochs, lr_d=self.lr_d, lr_g=self.lr_g, momentum=self.momentum)
        model.device = torch.device("cpu")
        return model


def _networks(d: int, latent_dim: int, hidden: int):
    """A generator (noise -> rows) and a discriminator (rows -> real/normal logit)."""
    from torch import nn

    generator = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d))
    discriminator = nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    return nn.ModuleDict({"generator": generator, "discriminator": discriminator})


class _GANTask:
    """One task's standardised rows and the box its uniform reference rows are drawn from.

    The box spans each column's 1st to 99th percentile, widened by half that range on both
    sides: percentiles rather than extremes, so that a few far anomalies do not stretch it
    until the reference rows around the bulk are too thin to draw a boundary.
    """

    def __init__(self, Z: np.ndarray, device, anomalies: np.ndarray | None = None) -> None:
        import torch

        self.rows = torch.as_tensor(Z, dtype=torch.float32, device=device)
        self.anomalies = None if anomalies is None or not len(anomalies) else torch.as_tensor(anomalies, dtype=torch.float32, device=device)
        lo, hi = np.percentile(Z, [1.0, 99.0], axis=0)
        span = np.maximum(hi - lo, 1e-3)
        self.low = torch.as_tensor(lo - 0.5 * span, dtype=torch.float32, device=device)
        self.width = torch.as_tensor(2.0 * span, dtype=torch.float32, device=device)


class _AdversarialTrainer:
    """Adversarial steps of one generator / discriminator pair (the shared inner loop)."""

    def __init__(self, net, latent_dim: int, batch_size: int, background: float, lr: float, generator) -> None:
        import torch

        self.net, self.latent_dim, self.batch_size, self.background = net, latent_dim, batch_size, background
        self.gen = generator
        self.opt_d = torch.optim.Adam(net["discriminator"].parameters(), lr=lr, betas=(0.5, 0.9))
        self.opt_g = torch.optim.Adam(net["generator"].parameters(), lr=lr, betas=(0.5, 0.9))

    def fakes(self, task: _GANTask, n: int):
        """``n`` fake rows: the generator's samples and the uniform reference rows."""
        import torch

        device = task.rows.device
        n_box = int(round(self.background * n))
        z = torch.randn(n - n_box, self.latent_dim, generator=self.gen).to(device)
        box = task.low + task.width * torch.rand(n_box, task.rows.shape[1], generator=self.gen).to(device)
        return torch.cat([self.net["generator"](z), box])

    def discriminator_loss(self, real, fake):
        import torch
        from torch.nn.functional import binary_cross_entropy_with_logits as bce

        d_real, d_fake = self.net["discriminator"](real), self.net["discriminator"](fake)
        return bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))

    def step(self, task: _GANTask) -> float:
        """One discriminator and one generator update; returns the discriminator's loss."""
        import torch
        from torch.nn.functional import binary_cross_entropy_with_logits as bce

        n = len(task.rows)
        index = torch.randint(n, (min(self.batch_size, n),), generator=self.gen).to(task.rows.device)
        real = task.rows[index]
        fake = self.fakes(task, len(real))
        if task.anomalies is not None:  # a labelled source's anomalies are "not normal" too
            pick = torch.randint(len(task.anomalies), (min(len(real), len(task.anomalies)),), generator=self.gen)
            fake = torch.cat([fake, task.anomalies[pick.to(task.rows.device)]])
        self.opt_d.zero_grad()
        loss_d = self.discriminator_loss(real, fake.detach())
        loss_d.backward()
        self.opt_d.step()
        n_gen = len(real) - int(round(self.background * len(real)))
        if n_gen > 0:
            z = torch.randn(n_gen, self.latent_dim, generator=self.gen).to(task.rows.device)
            self.opt_g.zero_grad()
            d_gen = self.net["discriminator"](self.net["generator"](z))
            loss_g = bce(d_gen, torch.ones_like(d_gen))
            loss_g.backward()
            self.opt_g.step()
        return float(loss_d.detach())


class MetaGANDetector(TransferDetector):
    """A discriminator meta-initialised across source tasks with Reptile, fine-tuned on the target.

    See the module docstring for the training and the score.  Every dataset (each source,
    and the target) is standardised with its own robust statistics (of all its rows) in the
    shared space; a source's normal rows are its real rows.  The networks are small (two
    hidden layers of ``hidden`` units): the default budget (``meta_iterations * inner_steps +
    finetune_steps`` = 900 steps of ``batch_size`` rows) takes a few seconds on one CPU
    core whatever the target's size.  Training runs on ``device``; the fitted networks are
    kept on the CPU.

    Known limit: on ADBench targets in the ``"features"`` space the fine-tuned score is
    inverted (mean AUROC 0.25 on six targets, see the README); without fine-tuning
    (``finetune_steps=0``) it is not, but only slightly better than chance (0.555 on four
    of them).  The meta-trained generator already covers the normal
    bulk, so fine-tuning on the unlabelled target teaches the discriminator that the bulk
    is fake and the rows it does not cover, the anomalies among them, are real.

    Args:
        meta_iterations: Reptile iterations (one source task each); 0 = no meta-training.
        inner_steps: Adversarial steps per Reptile iteration.
        meta_lr: Reptile's outer step size, in (0, 1].
        finetune_steps: Adversarial steps on the target.
        latent_dim: Width of the generator's noise.
        hidden: Width of the hidden layers.
        background: Share of each fake batch drawn uniformly from the task's widened
            bounding box, in [0, 1).
        source_anomalies: In meta-training, add a labelled source's anomalies to the fake
            batch (labelled "not normal"); the target is never labelled.
        lr: Adam learning rate (inner loop and fine-tuning).
        batch_size: Real rows per step (and as many fakes).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"`` (see :mod:`anomaly_gym.detectors.transfer`).
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the weights, the task draws, the batches and the noise.

    Attributes:
        network_: The fine-tuned ``generator`` and ``discriminator`` (``nn.ModuleDict``, CPU).
        meta_state_: The meta-parameters fine-tuning started from (a state dict; a random
            initialisation when ``meta_iterations == 0``).
        target_scaler_: Robust scaler fitted on the target rows.
        finetune_losses_: The discriminator's loss at every fine-tuning step; the first is
            the loss of the initialisation on the target.
    """

    def __init__(
        self,
        meta_iterations: int = 40,
        inner_steps: int = 20,
        meta_lr: float = 0.5,
        finetune_steps: int = 100,
        latent_dim: int = 8,
        hidden: int = 64,
        background: float = 0.75,
        source_anomalies: bool = True,
        lr: float = 3e-4,
        batch_size: int = 128,
        device: str = "auto",
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.meta_iterations = meta_iterations
        self.inner_steps = inner_steps
        self.meta_lr = meta_lr
        self.finetune_steps = finetune_steps
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.background = background
        self.source_anomalies = source_anomalies
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    #: Whether the sources are meta-trained on (the from-scratch twin only borrows their space).
    _meta_train = True

    def _check_params(self) -> None:
        _check_positive(latent_dim=self.latent_dim, hidden=self.hidden, batch_size=self.batch_size)
        for name in ("meta_iterations", "inner_steps", "finetune_steps"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not 0.0 < self.meta_lr <= 1.0:
            raise ValueError(f"meta_lr must be in (0, 1], got {self.meta_lr}")
        if not 0.0 <= self.background < 1.0:
            raise ValueError(f"background must be in [0, 1), got {self.background}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def _fit(self, X, y, source: list[SourceData] | None) -> None:
        import torch
        from anomaly_gym.meta.reptile import reptile_update

        self._check_params()
        device = resolve_device(self.device)
        seed = seed_int(self.random_state)
        labelled, Zt = self._shared_space_labelled(X, source)
        self.target_scaler_ = _scaler(Zt)
        target = _GANTask(self.target_scaler_.transform(Zt), device)
        with seeded(seed):
            net = _networks(Zt.shape[1], self.latent_dim, self.hidden).to(device)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            meta = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if self._meta_train and self.meta_iterations > 0:
                tasks = [self._source_task(i, Z, ys, device) for i, (Z, ys) in enumerate(labelled)]
                draws = np.random.default_rng([seed, 1]).integers(len(tasks), size=self.meta_iterations)
                for t in draws:
                    net.load_state_dict(meta)
                    trainer = _AdversarialTrainer(net, self.latent_dim, self.batch_size, self.background, self.lr, gen)
                    for _ in range(self.inner_steps):
                        trainer.step(tasks[t])
                    adapted = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    meta = reptile_update(meta, adapted, self.meta_lr)
            net.load_state_dict(meta)
            trainer = _AdversarialTrainer(net, self.latent_dim, self.batch_size, self.background, self.lr, gen)
            with torch.no_grad():
                first = trainer.discriminator_loss(target.rows, trainer.fakes(target, len(target.rows)))
            losses = [float(first)]
            for _ in range(self.finetune_steps):
                losses.append(trainer.step(target))
        self.meta_state_ = {k: v.cpu() for k, v in meta.items()}
        self.finetune_losses_ = np.asarray(losses)
        self.network_ = net.cpu().eval()

    def _source_task(self, index: int, Z: np.ndarray, y: np.ndarray | None, device) -> _GANTask:
        """A source task: its normal rows as the real ones, its labelled anomalies (if used) as extra fakes."""
        normal = _normal_rows(Z, y, index)
        scaler = _scaler(Z)  # all rows, like the (contaminated) target's
        anomalies = Z[y == 1] if (self.source_anomalies and y is not None and len(normal) < len(Z)) else None
        return _GANTask(scaler.transform(normal), device, None if anomalies is None else scaler.transform(anomalies))

    def discriminator_loss(self, X, n_fake: int | None = None, random_state: int = 0, network=None) -> float:
        """The discriminator's loss on target rows ``X`` against seeded fakes (its training objective).

        Args:
            X: Rows in the detector's input space.
            n_fake: Fake rows (default: as many as rows).
            random_state: Seed of the fakes.
            network: Networks to evaluate (default the fitted ones); e.g. a ``ModuleDict``
                loaded with :attr:`meta_state_` gives the loss of the initialisation.
        """
        import torch
        from anomaly_gym.detectors.base import check_X

        X = check_X(X)
        Z = self.target_scaler_.transform(self._to_space(X))
        task = _GANTask(Z, torch.device("cpu"))
        net = self.network_ if network is None else network
        gen = torch.Generator().manual_seed(int(random_state))
        trainer = _AdversarialTrainer(net, self.latent_dim, self.batch_size, self.background, self.lr, gen)
        with torch.no_grad():
            return float(trainer.discriminator_loss(task.rows, trainer.fakes(task, n_fake or len(Z))))

    def initial_network(self):
        """The networks at the start of fine-tuning (loaded with :attr:`meta_state_`)."""
        with seeded(0):  # the layers' throwaway initialisation leaves the global generators alone
            net = _networks(self.network_["discriminator"][0].in_features, self.latent_dim, self.hidden)
        net.load_state_dict(self.meta_state_)
        return net.eval()

    def _decision_function(self, X):
        import torch

        Z = self.target_scaler_.transform(self._to_space(X))
        with torch.no_grad():
            logit = self.network_["discriminator"](torch.as_tensor(Z, dtype=torch.float32)).reshape(-1)
        return -logit.double().numpy()


class ScratchGANDetector(MetaGANDetector):
    """:class:`MetaGANDetector`'s network trained from scratch on the target (no meta-training).

    The same generator, discriminator, fake batches, fine-tuning steps and score, from a
    random initialisation.  It takes the source like the meta-GAN only to resolve the same
    shared space (``feature_space="auto"``: the target's own features when the sources'
    widths differ), so that the two see identical inputs; nothing is learned from the
    source's rows.  ``meta_iterations``, ``inner_steps`` and ``meta_lr`` are ignored.
    """

    _meta_train = False


__all__ = ["MOGAALDetector", "MetaGANDetector", "SOGAALDetector", "ScratchGANDetector"]
