"""The two usual alternatives trained with their own default recipes, for time_to_quality.py.

    pip install -e '.[compare]'     # diffusers, denoising-diffusion-pytorch (no weights fetched)
    python benchmarks/alternatives.py diffusers --snapshots 10,20 --n 1000 --out runs/diffusers

One run trains for the largest snapshot's minutes and saves the EMA weights when the training
time passes each snapshot (neither recipe's learning rate depends on the run's length, so one run
gives every budget; saving is not training time, nor is start-up and data loading). Then, for
every snapshot, n samples (seed 0) are written as OUT/samples/*.npz (uint8, 28x28: the 32x32
samples cropped back) and listed in OUT/snapshots.csv for `ddpm eval --samples`:
- `dpmpp-2m`: ddpm's own DPM-Solver++(2M), 20 NFE, uniform spacing (ddpm's sample.spacing
  default), through ddpm.make_denoiser on their EMA network with THEIR alpha_bar table as a
  ddpm Schedule and their prediction type (eps for diffusers, v for lucidrains), fp32, x0 clipped;
- their own default sampler (diffusers: DDPMPipeline, 1000 ancestral steps; lucidrains:
  GaussianDiffusion.sample, 1000 ancestral steps as sampling_timesteps defaults to timesteps),
  when it is affordable: its cost per image is measured on timed network calls, and if n images
  would take longer than --own-minutes it runs on as many as fit (the n column says how many;
  FID is biased upwards at small n, KID is not), or is skipped, saying so, below --own-min-n.

Data: ddpm's Fashion-MNIST (or MNIST) train split, padded 28 -> 32 with the background value 0
(UNet2DModel's 6 levels need sizes divisible by 32, lucidrains' Unet by 8), random horizontal
flips, scaled to [-1, 1] (diffusers: ToTensor + Normalize(0.5, 0.5)) or [0, 1] (lucidrains: its
Dataset's ToTensor; GaussianDiffusion's auto_normalize maps to [-1, 1]). Both train in fp32 on
one channel (their defaults: mixed_precision "no", amp False). Batches are drawn without
replacement per epoch, as a shuffled DataLoader. Their recipes, written here on their public
classes (not copies of their scripts; the accelerate, dataset and logging machinery is left out):
see `diffusers_recipe` and `lucidrains_recipe`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

LIBRARIES = {"diffusers": "diffusers", "denoising-diffusion-pytorch": "denoising_diffusion_pytorch"}
DATASETS = ("fashion-mnist", "mnist")  # 28x28 grey, padded to 32
PAD = 2  # 28 + 2 * PAD = 32
DPM_STEPS = 20
SNAPSHOT_FIELDS = ["minutes", "steps", "train_s", "sampler", "nfe", "n", "samples"]
Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class Recipe:
    """One library's recipe, built. `train_step(x, generator)` takes a uint8 batch [B, 1, 32, 32]
    (already flipped) and does one optimizer step with EMA update, returning the loss (a tensor,
    not read); `ema_state()` is the EMA weights; `sampling(state)` loads them into a fresh
    network -> (net(x_t, t, labels) -> raw output, own sampler (n, seed, start) -> float
    [n, 1, 32, 32] in [-1, 1], images start.. of the seed); `schedule` is their alpha_bar table, `prediction` their network's output."""

    train_step: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    ema_state: Callable[[], dict]
    sampling: Callable[[dict], tuple[Net, Callable[[int, int, int], torch.Tensor]]]
    schedule: object  # ddpm.schedules.Schedule
    prediction: str
    own_sampler: str
    own_nfe: int


def diffusers_recipe() -> Recipe:
    """diffusers' examples/unconditional_image_generation/train_unconditional.py, its defaults
    (parse_args) and the model, scheduler and EMA as its main() builds them, and the flags of
    the example's documented command (README / train.sh: --use_ema --random_flip):
    - UNet2DModel(layers_per_block=2, block_out_channels=(128, 128, 256, 256, 512, 512),
      DownBlock2D x4, AttnDownBlock2D, DownBlock2D / UpBlock2D, AttnUpBlock2D, UpBlock2D x4),
      sample_size 32 (the script's --resolution 64 is the image size; ours is 32) and one
      channel (the script converts to RGB; Fashion-MNIST is grey): 113.7M parameters;
    - DDPMScheduler(num_train_timesteps=1000 (--ddpm_num_steps), beta_schedule "linear"
      (--ddpm_beta_schedule), prediction_type "epsilon" (--prediction_type)); loss
      F.mse_loss(model(add_noise(x, noise, t), t).sample, noise), t ~ U{0..999};
    - AdamW(lr 1e-4, betas (0.95, 0.999), weight_decay 1e-6, eps 1e-8) (--learning_rate,
      --adam_beta1/2, --adam_weight_decay, --adam_epsilon), gradient norm clipped at 1.0;
    - get_scheduler("cosine", warm-up 500 steps (--lr_warmup_steps), length len(dataloader) *
      num_epochs = 3750 * 100 steps (batch 16 (--train_batch_size), 100 epochs (--num_epochs)));
    - EMAModel(decay 0.9999 (--ema_max_decay), use_ema_warmup=True, inv_gamma 1.0, power 3/4
      (--ema_inv_gamma, --ema_power)), stepped after every optimizer step;
    - its sampler: DDPMPipeline with the same DDPMScheduler, 1000 steps (--ddpm_num_inference_steps).
    """
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from ddpm.rng import seeded_generator
    from ddpm.schedules import Schedule

    def build() -> UNet2DModel:
        return UNet2DModel(
            sample_size=32, in_channels=1, out_channels=1, layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )  # fmt: skip

    def scheduler() -> DDPMScheduler:
        return DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon"
        )

    model, noise_scheduler = build(), scheduler()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
    )
    steps_per_epoch = math.ceil(60_000 / 16)
    lr_scheduler = get_scheduler(
        "cosine",
        optimizer=optimizer,
        num_warmup_steps=500,
        num_training_steps=steps_per_epoch * 100,
    )
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)

    def train_step(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = batch.float() / 127.5 - 1.0  # ToTensor + Normalize([0.5], [0.5])
        noise = torch.randn(x.shape, generator=generator)
        t = torch.randint(0, 1000, (x.shape[0],), generator=generator)
        pred = model(noise_scheduler.add_noise(x, noise, t), t).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def ema_state() -> dict:
        averaged = copy.deepcopy(model)
        ema.copy_to(averaged.parameters())
        return averaged.state_dict()

    def sampling(state: dict) -> tuple[Net, Callable[[int, int, int], torch.Tensor]]:
        net = build().eval()
        net.load_state_dict(state)
        pipeline = DDPMPipeline(unet=net, scheduler=scheduler())
        pipeline.set_progress_bar_config(disable=True)

        def own(n: int, seed: int, start: int) -> torch.Tensor:
            generators = [seeded_generator(seed, start + i) for i in range(n)]
            images = pipeline(batch_size=n, generator=generators, output_type="np").images
            return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1  # [0, 1] -> [-1, 1]

        return (lambda x, t, labels=None: net(x, t).sample), own

    table = Schedule(
        betas=noise_scheduler.betas.double(), alpha_bar=noise_scheduler.alphas_cumprod.double()
    )
    return Recipe(train_step, ema_state, sampling, table, "eps", "ddpm-pipeline", 1000)


def lucidrains_recipe() -> Recipe:
    """denoising-diffusion-pytorch: its README's Trainer example with the installed version's
    defaults (checked on 2.3.4):
    - Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1) (README; flash_attn left at its default,
      the same maths on a CPU): 35.7M parameters;
    - GaussianDiffusion(image_size=32) defaults: timesteps 1000, sampling_timesteps = timesteps
      (1000 ancestral steps), objective "pred_v", beta_schedule "sigmoid", auto_normalize
      (data [0, 1] -> [-1, 1]); its own loss (forward -> p_losses, with the loss_weight buffer);
    - Trainer defaults: train_batch_size 16, augment_horizontal_flip True, train_lr 1e-4,
      Adam betas (0.9, 0.99), max_grad_norm 1.0, ema_decay 0.995 with ema_update_every 10
      (ema_pytorch.EMA over the GaussianDiffusion, as Trainer builds it; EMA's own defaults:
      update_after_step 100, warm-up inv_gamma 1, power 2/3), amp False. Trainer's loop
      (loss, backward, clip, step, zero_grad, ema.update) is reproduced without its accelerate
      and image-folder machinery;
    - its sampler: the EMA GaussianDiffusion's sample() (1000 ancestral steps).
    """
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    from ddpm.rng import seeded_generator
    from ddpm.schedules import Schedule

    def build() -> GaussianDiffusion:
        return GaussianDiffusion(Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1), image_size=32)

    diffusion = build()
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)

    def train_step(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = batch.float() / 255.0  # its Dataset's ToTensor; the diffusion normalizes
        noise = torch.randn(x.shape, generator=generator)
        t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), generator=generator)
        loss = diffusion(x, times=t, noise=noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
        return loss.detach()

    def sampling(state: dict) -> tuple[Net, Callable[[int, int, int], torch.Tensor]]:
        sampler = build().eval()
        sampler.load_state_dict(state)

        def own(n: int, seed: int, start: int) -> torch.Tensor:
            with torch.random.fork_rng():  # its sampler draws from the global generator
                torch.manual_seed(seeded_generator(seed, start).initial_seed())
                return sampler.sample(batch_size=n) * 2 - 1  # [0, 1] -> [-1, 1]

        return (lambda x, t, labels=None: sampler.model(x, t)), own

    table = Schedule(betas=diffusion.betas.double(), alpha_bar=diffusion.alphas_cumprod.double())
    return Recipe(
        train_step, lambda: ema.ema_model.state_dict(), sampling, table, "v", "gaussian-diffusion",
        diffusion.sampling_timesteps,
    )  # fmt: skip


RECIPES = {"diffusers": diffusers_recipe, "denoising-diffusion-pytorch": lucidrains_recipe}


def load_images(dataset: str, data_dir: str | None = None) -> torch.Tensor:
    """ddpm's train split of a 28x28 grey dataset, padded to 32 with 0 -> uint8 [N, 1, 32, 32]."""
    from ddpm.config import load_preset
    from ddpm.data import load_dataset

    config = replace(load_preset(dataset).data, image_size=32, channels=1, fit="pad")
    return load_dataset(replace(config, data_dir=data_dir) if data_dir else config).images


def batches(
    images: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of uint8 batches, each image flipped left-right with p = 1/2."""
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = images[order[start : start + batch_size]]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            yield torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def crop(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [N, 1, 32, 32] -> uint8 [N, 1, 28, 28] (the padding removed)."""
    from ddpm.pixels import to_uint8

    return to_uint8(images[..., PAD:-PAD, PAD:-PAD])


def train(
    recipe: Recipe, images: torch.Tensor, snapshots: list[float], out: Path, *, seed: int
) -> list[tuple[float, int, float, Path]]:
    """Train until the training time passes each snapshot's minutes, saving the EMA weights
    there -> [(minutes, steps, training seconds, weights file)]. Saving is not training time."""
    generator = torch.Generator().manual_seed(seed)
    data = batches(images, 16, generator)
    saved, trained, cpu, step = [], 0.0, 0.0, 0
    for minutes in sorted(snapshots):
        while trained < minutes * 60:
            started, started_cpu = time.perf_counter(), time.process_time()
            recipe.train_step(next(data), generator)
            trained += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            step += 1
            if step % 25 == 0 or step == 5:
                print(f"step {step}: {trained:.0f} s, {trained / step:.2f} s/step "
                      f"({cpu / step:.2f} CPU s/step)", flush=True)  # fmt: skip
        path = out / f"ema-{minutes:g}m.pt"
        torch.save({"state": recipe.ema_state(), "step": step, "train_s": trained}, path)
        saved.append((minutes, step, trained, path))
        print(f"snapshot {minutes:g} min: step {step}, {trained:.0f} s -> {path}", flush=True)
    return saved


@torch.inference_mode()
def sample_dpmpp(recipe: Recipe, net: Net, n: int, *, seed: int, batch_size: int) -> torch.Tensor:
    """n images with ddpm's DPM-Solver++(2M) at 20 NFE -> float [n, 1, 32, 32] in [-1, 1];
    image i's starting noise depends only on (seed, i), as in ddpm.initial_noise."""
    from ddpm.config import SampleConfig
    from ddpm.denoiser import make_denoiser
    from ddpm.initial_noise import initial_noise
    from ddpm.samplers import SAMPLERS
    from ddpm.schedules import sampling_timesteps

    timesteps = sampling_timesteps(recipe.schedule, DPM_STEPS, SampleConfig().spacing)
    denoiser = make_denoiser(net, recipe.schedule, prediction=recipe.prediction, precision="fp32")
    out = []
    for start in range(0, n, batch_size):
        x_T = initial_noise(min(batch_size, n - start), (1, 32, 32), seed=seed, start=start)
        out.append(SAMPLERS["dpmpp-2m"](denoiser, x_T, recipe.schedule, timesteps).clamp(-1, 1))
    return torch.cat(out)


@torch.inference_mode()
def seconds_per_image(net: Net, nfe: int, batch_size: int, calls: int = 3) -> float:
    """A sampler's cost per image, from `calls` timed network calls on a batch (after one
    warm-up call) times its NFE."""
    x, t = torch.randn(batch_size, 1, 32, 32), torch.full((batch_size,), 500)
    net(x, t, None)
    started = time.perf_counter()
    for _ in range(calls):
        net(x, t, None)
    return (time.perf_counter() - started) / (calls * batch_size) * nfe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--snapshots", default="10,20", help="training minutes, comma-separated")
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=1000, help="samples per snapshot and sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100, help="sampling batch")
    parser.add_argument("--own-minutes", type=float, default=15.0,
                        help="time cap of their own sampler per snapshot")  # fmt: skip
    parser.add_argument("--own-min-n", type=int, default=50,
                        help="skip their own sampler if fewer images fit in --own-minutes")  # fmt: skip
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    module = LIBRARIES[args.recipe]
    try:
        __import__(module)
    except ImportError:
        print(f"{args.recipe} is not installed: pip install -e '.[compare]'", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # their network initialisations draw from the global generator
    recipe, images = RECIPES[args.recipe](), load_images(args.dataset, args.data_dir)
    snapshots = [float(m) for m in args.snapshots.split(",")]
    rows = []
    for minutes, steps, seconds, path in train(recipe, images, snapshots, out, seed=args.seed):
        net, own = recipe.sampling(torch.load(path, weights_only=True)["state"])
        common = {"minutes": f"{minutes:g}", "steps": steps, "train_s": f"{seconds:.0f}"}
        started = time.perf_counter()
        x = sample_dpmpp(recipe, net, args.n, seed=args.seed, batch_size=args.batch_size)
        file = out / "samples" / f"{minutes:g}m-dpmpp-2m.npz"
        _save(crop(x), file)
        print(f"dpmpp-2m: {args.n} images in {time.perf_counter() - started:.0f} s", flush=True)
        rows.append({**common, "sampler": "dpmpp-2m", "nfe": DPM_STEPS, "n": args.n,
                     "samples": str(file)})  # fmt: skip
        rows += _own_rows(recipe, net, own, args, minutes, common)
        with open(out / "snapshots.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SNAPSHOT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


def _own_rows(recipe: Recipe, net: Net, own, args, minutes: float, common: dict) -> list[dict]:
    """Their own sampler on as many of the n images as fit in --own-minutes, or none."""
    cost = seconds_per_image(net, recipe.own_nfe, min(args.batch_size, 16))
    n = min(args.n, int(args.own_minutes * 60 / cost))
    label = f"{recipe.own_sampler}-{recipe.own_nfe}"
    if n < args.own_min_n:
        print(f"{label}: skipped ({cost:.0f} s per image measured; {args.n} images would take "
              f"{args.n * cost / 60:.0f} min, fewer than {args.own_min_n} fit in "
              f"{args.own_minutes:g} min)", flush=True)  # fmt: skip
        return []
    started, x = time.perf_counter(), []
    for start in range(0, n, args.batch_size):
        x.append(own(min(args.batch_size, n - start), args.seed, start))
    file = Path(args.out) / "samples" / f"{minutes:g}m-{label}.npz"
    _save(crop(torch.cat(x)), file)
    note = "" if n == args.n else f" (only {n} of {args.n}: {args.own_minutes:g} min cap)"
    print(f"{label}: {n} images in {time.perf_counter() - started:.0f} s{note}", flush=True)
    return [{**common, "sampler": label, "nfe": recipe.own_nfe, "n": n, "samples": str(file)}]


def _save(images: torch.Tensor, path: Path) -> None:
    from ddpm.metrics.sample_files import save_npz

    save_npz(images, path)


if __name__ == "__main__":
    sys.exit(main())
