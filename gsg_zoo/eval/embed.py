"""``gsg eval embed``: a 2-D map of a backbone's features coloured by class (PNG + coordinates JSON).

t-SNE (scikit-learn, the default; on the first 50 principal components of the standardised features,
PCA init) or UMAP (umap-learn, the ``umap`` extra), on a seeded class-balanced sample of at most
``points`` images of one split, with the model's own preprocessing (the feature cache's features).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .features import precision_tag
from .label_subsets import class_balanced
from .runner import EvalContext

METHODS = ("tsne", "umap")


def project(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, 2)`` coordinates of ``x`` and the projection's settings."""
    from sklearn.decomposition import PCA

    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    dims = min(50, x.shape[0], x.shape[1])
    x = PCA(dims, random_state=seed).fit_transform(x) if x.shape[1] > dims else x
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(x), {"perplexity": perplexity, "pca_dims": dims, "init": "pca"}
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise RuntimeError("--method umap needs umap-learn: pip install 'gsg-zoo[umap]'") from None
        neighbours = int(min(15, len(x) - 1))
        coords = umap.UMAP(n_neighbors=neighbours, random_state=seed).fit_transform(x)
        return np.asarray(coords), {"n_neighbors": neighbours, "pca_dims": dims}
    raise ValueError(f"unknown embedding method {method!r}: choose {', '.join(METHODS)}")


def plot(coords: np.ndarray, labels: np.ndarray, names: list[str] | None, title: str, path: Path) -> None:
    """Scatter of ``coords`` coloured by class, a legend of class names, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab20" if labels.max() >= 10 else "tab10")
    for c in np.unique(labels):
        keep = labels == c
        name = names[c] if names and c < len(names) else str(c)
        ax.scatter(coords[keep, 0], coords[keep, 1], s=6, color=cmap(int(c) % cmap.N), label=name)
    if len(np.unique(labels)) <= 20:
        ax.legend(markerscale=2.5, fontsize=7, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_embed(
    ctx: EvalContext,
    dataset: str,
    split: str = "test",
    method: str = "tsne",
    points: int = 2000,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> dict[str, Any] | None:
    """Embed at most ``points`` images of ``split``; writes ``OUT/embed_METHOD_DATASET.png`` and returns
    the report with every point's coordinates (None on torchrun ranks other than 0)."""
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}: choose {', '.join(METHODS)}")
    t0 = time.perf_counter()
    transform = ctx.eval_transform()
    feats = ctx.features(dataset, split, transform)
    if not ctx.is_main:
        return None
    labels = feats.labels.numpy()
    if labels.ndim != 1:
        raise ValueError(f"{dataset} is multi-label: an embedding plot colours one class per image")
    idx = np.arange(len(labels))
    if points < len(labels):
        idx = np.asarray(class_balanced(labels.tolist(), 100.0, seed, count=points))
    coords, settings = project(feats.feats.numpy()[idx].astype(np.float64), method, seed)
    png = Path(out_dir or ".") / f"embed_{method}_{dataset}.png"
    title = f"{method} of {ctx.spec} on {dataset} {split} ({len(idx)} images)"
    plot(coords, labels[idx], _class_names(ctx, dataset, split), title, png)
    return {
        "evaluator": "embed",
        "method": method,
        "settings": {
            **settings,
            "seed": seed,
            "transform": repr(transform),
            "precision": precision_tag(ctx.options),
        },
        "model": ctx.spec,
        "dataset": dataset,
        "split": split,
        "num_points": len(idx),
        "png": str(png),
        "points": [
            {"index": int(i), "label": int(labels[i]), "x": float(x), "y": float(y)}
            for i, (x, y) in zip(idx, coords)
        ],
        "wall_seconds": time.perf_counter() - t0,
    }


def _class_names(ctx: EvalContext, dataset: str, split: str) -> list[str] | None:
    from .datasets import build_split

    try:
        ds, _ = build_split(dataset, ctx.data_root, split, None, image_size=ctx.image_size)
    except (OSError, ValueError):
        return None
    classes = getattr(ds.dataset, "classes", None)
    return [str(c) for c in classes] if classes else None


def embed_markdown(r: dict[str, Any]) -> str:
    return (
        f"{r['method']} of `{r['model']}` on {r['dataset']} {r['split']}: {r['num_points']} images, "
        f"settings {', '.join(f'{k}={v}' for k, v in r['settings'].items() if k != 'transform')}\n\n"
        f"![{r['method']} embedding]({Path(r['png']).name})\n"
    )
