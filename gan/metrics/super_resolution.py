"""Super-resolution's pure functions: the resampling that makes LR inputs and the bicubic floor, and PSNR / SSIM on
the luminance channel with the border cropped, the convention of the SR literature (SRCNN, SRGAN: "PSNR [dB] and SSIM
... calculated on the y-channel of center-cropped, removal of a 4-pixel wide strip from each border images").

Every function takes and returns uint8 images [N, C, H, W] (the evaluator quantises outputs to uint8 first, as if saved
to PNG and read back), so a value is that of the saved images. The evaluation suite is gan.kinds.super_resolution's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

# ITU-R BT.601 luma of 8-bit RGB in the studio range 16..235, as MATLAB's rgb2ycbcr (which SR papers' numbers come
# from): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in 0..255. Grey images count as R = G = B.
Y_OFFSET, Y_WEIGHTS = 16.0, (65.481 / 255, 128.553 / 255, 24.966 / 255)
PEAK = 255.0  # PSNR's peak on the 8-bit scale of Y
SSIM_KERNEL, SSIM_SIGMA = 11, 1.5  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5 (torchmetrics' default)
CONVENTIONS = ("PSNR-Y / SSIM-Y: uint8 images, luminance Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (ITU-R "
               "BT.601, MATLAB rgb2ycbcr; grey images as R = G = B), `scale` border pixels cropped on every side, "
               f"computed in float64; PSNR peak {PEAK:g} per image; SSIM torchmetrics' ({SSIM_KERNEL}x{SSIM_KERNEL} "
               f"Gaussian window, or the largest odd size that fits a smaller image, sigma {SSIM_SIGMA}, data_range {PEAK:g}) per image; both averaged over images")
BICUBIC = ("torch.nn.functional.interpolate(mode='bicubic', align_corners=False, a = -0.75), antialias=True when "
           "downsampling (PIL/MATLAB-like imresize), rounded to uint8")


def luminance(images: torch.Tensor) -> torch.Tensor:
    """float64 Y [N, 1, H, W] on the 8-bit scale (16..235) of uint8 images [N, 1 or 3, H, W]."""
    x = images.double()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    weights = torch.tensor(Y_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
    return Y_OFFSET + (x * weights).sum(1, keepdim=True)


def crop_border(images: torch.Tensor, border: int) -> torch.Tensor:
    """[..., H, W] without `border` pixels on each side."""
    return images[..., border:images.shape[-2] - border, border:images.shape[-1] - border] if border else images


def psnr_y(fake: torch.Tensor, real: torch.Tensor, border: int) -> torch.Tensor:
    """Per image, PSNR in dB of the luminance of uint8 images, `border` pixels cropped; inf where they are equal."""
    a, b = (crop_border(luminance(x), border) for x in (fake, real))
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(PEAK**2 / mse)


def ssim_y(fake: torch.Tensor, real: torch.Tensor, border: int) -> torch.Tensor:
    """Per image, SSIM of the luminance of uint8 images, `border` pixels cropped (1 where they are equal)."""
    a, b = (crop_border(luminance(x), border) for x in (fake, real))
    return structural_similarity_index_measure(a, b, gaussian_kernel=True, sigma=SSIM_SIGMA,
                                               kernel_size=ssim_window(*a.shape[-2:]), data_range=PEAK,
                                               reduction="none")


def ssim_window(height: int, width: int) -> int:
    """SSIM_KERNEL, or the largest odd size that fits an image smaller than it (tiny test images)."""
    side = min(SSIM_KERNEL, height, width)
    return side if side % 2 else side - 1


def resample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images [N, C, H, W] resized to `size` by bicubic interpolation (BICUBIC), rounded to uint8."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    down = size[0] < images.shape[-2]
    out = F.interpolate(images.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=down)
    return out.round().clamp(0, 255).to(torch.uint8)


def bicubic_down(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR images of uint8 HR images whose sides `scale` divides (antialiased bicubic, as PIL / MATLAB imresize)."""
    return resample(images, (images.shape[-2] // scale, images.shape[-1] // scale))


def bicubic_up(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic floor: uint8 LR images upsampled `scale` times."""
    return resample(images, (images.shape[-2] * scale, images.shape[-1] * scale))


def nearest_up(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Each pixel repeated scale x scale times (how a grid shows an LR input at HR size)."""
    return images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
