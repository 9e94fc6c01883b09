"""The recipes: the MINE paper's experiments as Accelerate training scripts, one file each.

    python recipes/ib.py --config configs/ib_mine.yaml        # or: python -m recipes.ib ...

- ``ib``: the information bottleneck (baseline, MINE-IB, Deep VIB);
- ``gaussian_mi``: Figure 1, MINE and MINE-f against the closed form on correlated Gaussians;
- ``gan_codes_grid25`` and ``gan_codes_stacked``: GAN codes against mode dropping (the GAN and
  its training loop in ``gan_codes``);
- ``ali``: ALI / BiGAN with MINE, reconstruction;
- ``demo``: the README's main job (``ib`` and ``gaussian_mi`` at a short budget).

Shared pieces: ``common`` (accelerator and wandb set-up, resuming, checkpointed counters,
results, the error wrapper, running recipes from recipes), ``training`` (the method's penalty,
progress and step logging, the linear decay, images), ``report`` (markdown tables, figures),
``layers`` (MLP, the sampling layer), ``image_metrics`` (SSIM, MS-SSIM), ``digits`` (digit
images: 8x8 ``digits``, 28x28 ``mnist5k`` and ``mnist``; the cached digit classifier) and
``mnist_files`` (MNIST's IDX files). ``benchmarks`` reproduces the README's tables;
``benchmarks/gpu_check.py`` checks a CUDA machine.
"""
