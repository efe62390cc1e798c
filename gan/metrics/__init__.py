"""Sample-quality metrics: feature extractors, IS/FID/KID/precision-recall, toy metrics, memorisation, reference cache."""
