"""DCGAN samples, VAE prior samples and VAE reconstructions side by side:

    python experiments/vae_vs_gan/side_by_side.py runs/<dcgan run> runs/<vae run>
"""
import sys

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid
from gan.train import load_checkpoint
from gan.metrics.real_data import load_tensors

def grid(x):
    x = torch.nn.functional.interpolate(x.float().cpu(), scale_factor=3, mode="nearest")
    g = make_grid(x, nrow=8, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return Image.fromarray((g.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))

_, _, gan = load_checkpoint(sys.argv[1])
_, dm, vae = load_checkpoint(sys.argv[2])
dcgan_x = gan.sample(64, generator=torch.Generator().manual_seed(1))["x"]
vae_x = vae.sample(64, generator=torch.Generator().manual_seed(1))["x"]
real = load_tensors(dm.dataset("test"), 32)[0]
rec = vae.reconstruct(real)
pairs = torch.stack([real.view(4, 8, 1, 16, 16), rec.view(4, 8, 1, 16, 16).cpu()], 1).flatten(0, 2)
tiles = [grid(dcgan_x), grid(vae_x), grid(pairs)]
titles = ["DCGAN samples (make run, last ckpt)", "VAE prior samples (decoder means)", "test digits / VAE reconstructions (alternate rows)"]
w = sum(t.width for t in tiles) + 40
out = Image.new("RGB", (w, tiles[0].height + 24), "white")
x = 0
d = ImageDraw.Draw(out)
for t, title in zip(tiles, titles):
    out.paste(t, (x, 24)); d.text((x + 4, 4), title, fill="black"); x += t.width + 20
out.save("experiments/vae_vs_gan/dcgan_vs_vae_digits.png")
print(out.size)
