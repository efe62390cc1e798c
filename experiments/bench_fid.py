"""Benchmark: classifier-backbone FID on 10,000 generated digits (reference cached), and Inception-v3 CPU throughput.

    python experiments/bench_fid.py [--threads 2] [--num-samples 10000] [--inception-images 32]

The FID timing covers what the metric costs once the 10,000 samples exist: loading the cached
classifier and reference statistics, classifier features, float64 statistics and the value.
Drawing the samples from the project's DCGAN generator (random weights, same cost) is timed and
printed separately, since it depends on the model. The classifier and the reference statistics
are prepared once first (they are cached on disk).
Inception timing uses the real weights when torch hub has them, else random weights of the same
shapes (the cost is the same). Target: FID within 15 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parent.parent


def digits_model_and_data(image_size: int):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=digits", f"data.image_size={image_size}", "model=dcgan",
                                          "logger=none", "metrics=none", "paths.run_dir=/tmp/bench"])
    return instantiate(cfg.model), instantiate(cfg.data)


def bench_classifier_fid(num_samples: int, image_size: int, cache_dir: str, repeats: int) -> None:
    from gan.metrics.evaluator import Evaluator, generate

    module, datamodule = digits_model_and_data(image_size)
    evaluator = Evaluator(datamodule, names=["fid"], backbone="classifier", num_samples=num_samples, cache_dir=cache_dir)
    started = time.perf_counter()
    evaluator.backbone, evaluator.reference("test", num_samples)  # classifier + reference: cached on disk
    print(f"prepare (classifier training + reference statistics, once, cached): {time.perf_counter() - started:.1f}s; "
          f"classifier test accuracy {evaluator.backbone.info['classifier_test_accuracy']:.4f}")
    started = time.perf_counter()
    fake, _ = generate(module, num_samples, seed=0)
    generation = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        fresh = Evaluator(datamodule, names=["fid"], backbone="classifier", num_samples=num_samples, cache_dir=cache_dir)
        started = time.perf_counter()
        evaluation = fresh.score(fake, "test", seed=0, num_real=num_samples)
        times.append(time.perf_counter() - started)
        assert fresh.reference("test", num_samples).from_cache
    median = statistics.median(times)
    print(f"classifier FID of {num_samples} generated digits {image_size}x{image_size} vs {evaluation.provenance['num_real']} "
          f"real test images (reference cached; classifier loaded from disk, features, statistics, value): "
          f"median {median:.2f}s over {repeats} runs ({', '.join(f'{t:.2f}' for t in times)}); target < 15 s: "
          f"{'PASS' if median < 15 else 'FAIL'}")
    print(f"  drawing the {num_samples} samples from the DCGAN generator (width 64, random weights) took a further "
          f"{generation:.2f}s; that cost belongs to the model, not the metric")


def bench_inception(images: int, batch_size: int) -> None:
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from gan.metrics.feature_extractor_inception import hub_weights_path
    from gan.metrics.quantize import to_uint8

    if hub_weights_path().is_file():
        net, weights = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                      feature_extractor_weights_path=str(hub_weights_path())), "real"
    else:
        with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
                mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
            net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        weights = "random (same cost)"
    net.eval().requires_grad_(False)
    x = to_uint8(torch.rand(batch_size, 3, 32, 32) * 2 - 1)
    with torch.no_grad():
        net(x[:2])  # warm-up
        started = time.perf_counter()
        done = 0
        while done < images:
            net(x)
            done += len(x)
    rate = done / (time.perf_counter() - started)
    print(f"Inception-v3 (torch-fidelity, TF1 bilinear resize to 299, {weights} weights) on CPU: {rate:.2f} images/s "
          f"(batch {batch_size}); 10k samples ~ {10000 / rate / 60:.0f} min, 50k ~ {50000 / rate / 60:.0f} min "
          f"for the generated side alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2 cores)")
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--image-size", type=int, default=32, help="digits resolution (the training default is 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inception-images", type=int, default=32, help="images to time Inception on (0: skip)")
    parser.add_argument("--cache-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        bench_classifier_fid(args.num_samples, args.image_size, args.cache_dir or tmp, args.repeats)
    if args.inception_images:
        bench_inception(args.inception_images, batch_size=min(16, args.inception_images))


if __name__ == "__main__":
    main()
