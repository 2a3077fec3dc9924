"""``recsys-mf``: a recommender over user and item ids, matrix factorisation trained with
BPR (Bayesian personalised ranking) and negative sampling, plus a trend prior; seeded and
deterministic on CPU (CUDA when present).

1. **Model.** ``score(u, i) = u . v_i + b_i`` (``dim``-wide user and item embeddings, an item
   bias), trained on the training split's interactions: each step takes a batch of
   (user, item) positives and one uniformly drawn item per positive as the negative, and
   minimises ``-log sigmoid(score(u, pos) - score(u, neg))`` with L2 on the embeddings
   (Adam). Epochs until validation NDCG@10 stops improving for ``patience`` epochs.
2. **Trend prior.** On MovieLens-100K in time order, what is popular *now* predicts the
   next weeks better than any user model alone (recency-weighted popularity beats all-time
   popularity by 0.06 NDCG@10 on March 1998; bench/recsys.py). The ranking adds it: per
   user, the MF scores standardised over the catalogue plus ``prior_weight`` times the
   standardised ``log1p`` of recency-weighted popularity (half-life ``half_life_days``
   before the end of training). ``prior_weight`` is chosen on validation from
   ``PRIOR_WEIGHTS``, as a classifier's threshold would be.
3. **Serving.** Everything a request needs is precomputed: item rows ``[v_i, b_i, prior_i]``
   and per user ``[u, 1, prior_weight * sigma_u]``, so a top-k over the whole catalogue is
   one matrix-vector product (an inner-product search an ANN index could serve), the
   user's training items masked out (``exclude_seen``), a partial sort. An unknown user
   gets the prior alone: the popularity fallback, flagged in the response.

Files: ``model.safetensors`` (embeddings, item rows, per-user normalisation, each user's
seen items as CSR, training counts), ``vocab.json`` (user and item ids in index order),
``recommender.json`` (width, prior weight, activity buckets, the end of training).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from driftloop.errors import DataError
from driftloop.families.base import FittedModel, ModelFamily, Prediction, TrainResult
from driftloop.formats import InteractionsSchema
from driftloop.recsys_metrics import K, ranking_metrics, relevant_by_user

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.data import Splits
    from driftloop.drift import DriftResult, Source
    from driftloop.preprocess import Columns
    from driftloop.spec import DatasetSpec

WEIGHTS, VOCAB, CONFIG = "model.safetensors", "vocab.json", "recommender.json"
PRIOR_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)  # chosen on validation; 0: MF alone
MAX_K = 100  # the longest list a request may ask for (bounded work and response size)
NEW = "new"  # the activity bucket of a user the model does not know
SCORE_BATCH = 512  # users per matrix product at prediction: bounded memory


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class RecsysConfig:
    user_column: str
    item_column: str
    dim: int
    prior_weight: float
    half_life_days: float
    trained_until: str  # the last training interaction (the prior's "now"), ISO
    activity_edges: list[float]  # interaction counts splitting known users into buckets
    activity: list[str]  # bucket names, NEW first


class RecsysMFModel(FittedModel):
    family = "recsys-mf"

    def __init__(
        self, cfg: RecsysConfig, users: list[str], items: list[str], t: dict[str, np.ndarray]
    ) -> None:
        self.cfg, self.users, self.items, self.t = cfg, users, items, t
        self._user_index = {u: j for j, u in enumerate(users)}
        self._items = np.asarray(items, dtype=object)
        self._query = np.hstack(  # [u, 1, prior_weight * sigma_u]: one dot per item
            [
                t["user_emb"],
                np.ones((len(users), 1), np.float32),
                (cfg.prior_weight * t["user_sigma"])[:, None].astype(np.float32),
            ]
        ).astype(np.float32)
        self._rows = np.ascontiguousarray(  # [v_i, b_i, prior_i]
            np.hstack([t["item_emb"], t["item_bias"][:, None], t["prior"][:, None]]),
            dtype=np.float32,
        )
        bucket = np.searchsorted(np.asarray(cfg.activity_edges), t["user_count"], side="left")
        self._activity = np.asarray(cfg.activity[1:], dtype=object)[bucket]

    @property
    def inputs(self) -> list[str]:
        return [self.cfg.user_column]

    @property
    def catalogue(self) -> int:
        return len(self.items)

    def user_rows(self, users: Any) -> np.ndarray:
        """Index of each user id in the model (-1: unknown)."""
        get = self._user_index.get
        return np.fromiter((get(str(u), -1) for u in users), dtype=np.int64, count=len(users))

    def seen(self, row: int) -> np.ndarray:
        ptr = self.t["seen_indptr"]
        return self.t["seen_indices"][ptr[row] : ptr[row + 1]]

    def top_k(self, rows: np.ndarray, k: int, exclude_seen: np.ndarray) -> tuple[np.ndarray, ...]:
        """(item indexes [n, k] (-1: none left), scores [n, k]) for user rows (-1: unknown)."""
        n, m = len(rows), self.catalogue
        k = min(k, m)
        idx = np.full((n, k), -1, np.int64)
        out = np.zeros((n, k), np.float64)
        prior = self.t["prior"].astype(np.float64)
        for start in range(0, n, SCORE_BATCH):
            part = rows[start : start + SCORE_BATCH]
            known = part >= 0
            s = np.empty((len(part), m), np.float64)
            s[~known] = prior
            if known.any():
                r = part[known]
                dots = self._query[r] @ self._rows.T
                s[known] = (dots - self.t["user_mean"][r, None]) / self.t["user_sigma"][r, None]
            for j in np.flatnonzero(known & exclude_seen[start : start + SCORE_BATCH]):
                s[j, self.seen(int(part[j]))] = -np.inf
            # 1. a partial sort: the k best, then only those ordered
            best = (
                np.argpartition(-s, k - 1, axis=1)[:, :k]
                if k < m
                else np.tile(np.arange(m), (len(part), 1))
            )
            order = np.argsort(-np.take_along_axis(s, best, 1), axis=1, kind="stable")
            best = np.take_along_axis(best, order, 1)
            val = np.take_along_axis(s, best, 1)
            ok = np.isfinite(val)
            idx[start : start + len(part)] = np.where(ok, best, -1)
            out[start : start + len(part)] = np.where(ok, val, 0.0)
        return idx, out

    def predict(self, inputs: Columns) -> Prediction:
        """Per row: its user's top ``k`` items (``items`` [n, max k], "" when fewer are left)
        and ``scores``; ``known`` (False: the popularity fallback); ``catalogue`` (its size).
        ``inputs`` may carry per-row ``k`` (default 10) and ``exclude_seen`` (default true)."""
        users = np.asarray(list(inputs[self.cfg.user_column]), dtype=object).astype(str)
        n = len(users)
        k_in = inputs.get("k")
        ks = np.full(n, K, np.int64) if k_in is None else np.asarray(k_in, np.int64)
        ex_in = inputs.get("exclude_seen")
        exclude = np.ones(n, bool) if ex_in is None else np.asarray(ex_in, bool)
        kmax = int(min(ks.max(initial=1), self.catalogue))
        uniq, inverse = np.unique(users, return_inverse=True)
        rows = self.user_rows(uniq)
        # one list per (user, exclude_seen): the same user is scored once
        key = inverse * 2 + exclude.astype(np.int64)
        keys, back = np.unique(key, return_inverse=True)
        idx, sc = self.top_k(rows[keys // 2], kmax, (keys % 2).astype(bool))
        idx, sc = idx[back], sc[back]
        cut = np.arange(kmax)[None, :] >= ks[:, None]
        idx = np.where(cut, -1, idx)
        items = np.where(idx >= 0, self._items[np.maximum(idx, 0)], "").astype(object)
        return {
            "items": items,
            "scores": np.where(idx >= 0, sc, 0.0),
            "known": rows[inverse] >= 0,
            "catalogue": np.full(n, self.catalogue, np.int64),
        }

    def predict_logged(self, inputs: Columns) -> tuple[Prediction, dict[str, np.ndarray]]:
        """The prediction, and what the payload log keeps (``RECSYS_LOG_COLUMNS``): the user
        id, their activity bucket, the ranked items as a JSON list, the top score."""
        pred = self.predict(inputs)
        users = np.asarray(list(inputs[self.cfg.user_column]), dtype=object).astype(str)
        rows = self.user_rows(users)
        activity = np.where(rows >= 0, self._activity[np.maximum(rows, 0)], NEW).astype(object)
        lists = [json.dumps([i for i in r if i != ""]) for r in pred["items"]]
        score = np.where(pred["known"], pred["scores"][:, 0] if pred["scores"].size else 0, np.nan)
        logged = {
            "user_id": users.astype(object),
            "user_activity": activity,
            "items": np.asarray(lists, dtype=object),
            "score": score.astype(np.float64),
        }
        return pred, logged

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_numpy(
            {k: np.ascontiguousarray(v) for k, v in self.t.items()}, str(directory / WEIGHTS)
        )
        (directory / VOCAB).write_text(json.dumps({"users": self.users, "items": self.items}))
        (directory / CONFIG).write_text(json.dumps(asdict(self.cfg), indent=2))

    def input_schema(self, spec: DatasetSpec) -> InteractionsSchema:
        return InteractionsSchema(
            kind="interactions",
            model=spec.name,
            target=spec.target,
            user=self.cfg.user_column,
            k=min(K, self.catalogue),
            max_k=min(MAX_K, self.catalogue),
            users=len(self.users),
            items=self.catalogue,
            activity=list(self.cfg.activity),
        )


class _Net(torch.nn.Module):
    def __init__(self, users: int, items: int, dim: int) -> None:
        super().__init__()
        self.user = torch.nn.Embedding(users, dim)
        self.item = torch.nn.Embedding(items, dim)
        self.bias = torch.nn.Embedding(items, 1)
        torch.nn.init.normal_(self.user.weight, std=0.1)
        torch.nn.init.normal_(self.item.weight, std=0.1)
        torch.nn.init.zeros_(self.bias.weight)


@dataclass
class _Data:
    """A training window as index arrays."""

    users: list[str]
    items: list[str]
    u: np.ndarray
    i: np.ndarray
    age_days: np.ndarray  # before the last interaction
    until: str


def _encode(df: pd.DataFrame, spec: DatasetSpec) -> _Data:
    import pandas as pd

    from driftloop.data import TIME

    opts = spec.interaction_options
    if df.empty:
        raise DataError("the training split holds no interactions")
    users = pd.Index(pd.unique(df[opts.user].astype(str)))
    items = pd.Index(pd.unique(df[opts.item].astype(str)))
    t = pd.to_datetime(df[TIME])
    age = (t.max() - t).dt.total_seconds().to_numpy() / 86400.0
    return _Data(
        list(users),
        list(items),
        users.get_indexer(df[opts.user].astype(str)),
        items.get_indexer(df[opts.item].astype(str)),
        age,
        t.max().isoformat(),
    )


class RecsysMF(ModelFamily):
    name = "recsys-mf"
    kinds: ClassVar[frozenset[str]] = frozenset({"interactions"})
    tasks: ClassVar[frozenset[str]] = frozenset({"ranking"})
    files = (WEIGHTS, VOCAB, CONFIG)
    search_space: ClassVar[dict[str, list[Any]]] = {
        "dim": [32, 64, 96],
        "lr": [2e-3, 5e-3, 1e-2],
        "l2": [1e-5, 1e-4, 1e-3],
        "half_life_days": [7.0, 14.0, 30.0],
    }

    def default_params(self) -> dict[str, Any]:
        return {
            "dim": 64,
            "lr": 5e-3,
            "l2": 1e-4,  # per-row squared norm of the three embeddings in a BPR triple
            "batch_size": 1024,
            "max_epochs": 30,
            "patience": 4,  # epochs without validation NDCG@10 improvement
            # Trend prior half-life: MovieLens' popularity turns over within weeks (new
            # releases); 14 days measured best of 7/14/30 on January and March 1998.
            "half_life_days": 14.0,
            "seed": 0,
        }

    def load(self, directory: Path) -> RecsysMFModel:
        cfg = RecsysConfig(**json.loads((directory / CONFIG).read_text()))
        vocab = json.loads((directory / VOCAB).read_text())
        return RecsysMFModel(
            cfg, vocab["users"], vocab["items"], load_numpy(str(directory / WEIGHTS))
        )

    def train(self, splits: Splits, spec: DatasetSpec, params: dict[str, Any]) -> TrainResult:
        self.check_task(spec)
        hp = self.parse_params(params)
        model, epochs, val = self._fit(splits.train, spec, hp, splits.validation)
        return TrainResult(model, val, epochs, hp)

    def refit(
        self,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> RecsysMFModel:
        hp = self.parse_params(params)
        weight = cast(RecsysMFModel, selected).cfg.prior_weight  # chosen on validation
        model, _, _ = self._fit(data, spec, hp, None, max(1, epochs or hp["max_epochs"]), weight)
        return model

    def _fit(
        self,
        train: pd.DataFrame,
        spec: DatasetSpec,
        hp: dict[str, Any],
        validation: pd.DataFrame | None,
        epochs: int | None = None,
        prior_weight: float | None = None,
    ) -> tuple[RecsysMFModel, int, dict[str, float]]:
        # 1. Determinism: the same data, parameters and seed give the same weights on CPU.
        torch.manual_seed(hp["seed"])
        dev = device()
        torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
        gen = torch.Generator().manual_seed(hp["seed"])
        data = _encode(train, spec)
        n_users, n_items = len(data.users), len(data.items)
        net = _Net(n_users, n_items, hp["dim"]).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
        u_all = torch.from_numpy(data.u).to(dev)
        i_all = torch.from_numpy(data.i).to(dev)
        rel = None
        if validation is not None:
            opts = spec.interaction_options
            rel = relevant_by_user(
                validation[opts.user].astype(str).tolist(),
                validation[opts.item].astype(str).tolist(),
            )
        best: tuple[float, int, float, RecsysMFModel] | None = None
        # 2. Epochs of BPR over shuffled positives, one uniform negative each.
        for epoch in range(1, (epochs or hp["max_epochs"]) + 1):
            for b in torch.randperm(len(data.u), generator=gen).split(hp["batch_size"]):
                b = b.to(dev)
                u, pos = u_all[b], i_all[b]
                neg = torch.randint(n_items, (len(b),), generator=gen).to(dev)
                eu, ep, en = net.user(u), net.item(pos), net.item(neg)
                diff = (eu * (ep - en)).sum(1) + (net.bias(pos) - net.bias(neg)).squeeze(1)
                l2 = (eu.pow(2).sum(1) + ep.pow(2).sum(1) + en.pow(2).sum(1)).mean()
                loss = -F.logsigmoid(diff).mean() + hp["l2"] * l2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if rel is None:
                continue
            # 3. Validation NDCG@10 at every prior weight; keep the best epoch and weight.
            for w in PRIOR_WEIGHTS:
                model = self._model(net, data, spec, hp, w)
                score = _validation_ndcg(model, rel)
                if best is None or score > best[0]:
                    best = (score, epoch, w, model)
            if best is not None and epoch - best[1] >= hp["patience"]:
                break
        if rel is None:
            w = PRIOR_WEIGHTS[2] if prior_weight is None else prior_weight
            return self._model(net, data, spec, hp, w), epochs or hp["max_epochs"], {}
        assert best is not None
        model = best[3]
        users = list(rel)
        idx, _ = model.top_k(model.user_rows(users), K, np.ones(len(users), bool))
        lists = [[model.items[j] for j in r if j >= 0] for r in idx]
        val = ranking_metrics(lists, [rel[u] for u in users], model.catalogue)
        val.pop("users")
        return model, best[1], val

    def _model(
        self, net: _Net, data: _Data, spec: DatasetSpec, hp: dict[str, Any], weight: float
    ) -> RecsysMFModel:
        """The serving form of the network now: precomputed rows, seen items, the prior."""
        with torch.no_grad():
            ue = net.user.weight.detach().cpu().numpy().astype(np.float32)
            ie = net.item.weight.detach().cpu().numpy().astype(np.float32)
            ib = net.bias.weight.detach().cpu().numpy().ravel().astype(np.float32)
        mf = ue @ ie.T + ib[None, :]
        mean, sigma = mf.mean(axis=1), np.maximum(mf.std(axis=1), 1e-6)
        recency = np.power(0.5, data.age_days / hp["half_life_days"])
        trend = np.log1p(np.bincount(data.i, weights=recency, minlength=len(data.items)))
        prior = (trend - trend.mean()) / max(float(trend.std()), 1e-6)
        pairs = np.unique(data.u * len(data.items) + data.i)
        seen_u, seen_i = pairs // len(data.items), pairs % len(data.items)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(seen_u, minlength=len(data.users)))])
        counts = np.bincount(data.u, minlength=len(data.users)).astype(np.float64)
        # Known users in four buckets of about equal user counts by training interactions.
        edges = sorted({float(e) for e in np.quantile(counts, [0.25, 0.5, 0.75]).round()})
        names = [NEW, *activity_names(edges)]
        t = {
            "user_emb": ue,
            "item_emb": ie,
            "item_bias": ib,
            "prior": prior.astype(np.float32),
            "user_mean": mean.astype(np.float64),
            "user_sigma": sigma.astype(np.float64),
            "seen_indptr": indptr.astype(np.int64),
            "seen_indices": seen_i.astype(np.int32),
            "user_count": counts,
            "item_count": np.bincount(data.i, minlength=len(data.items)).astype(np.float64),
        }
        opts = spec.interaction_options
        cfg = RecsysConfig(
            user_column=opts.user,
            item_column=opts.item,
            dim=hp["dim"],
            prior_weight=float(weight),
            half_life_days=float(hp["half_life_days"]),
            trained_until=data.until,
            activity_edges=[float(e) for e in edges],
            activity=names,
        )
        return RecsysMFModel(cfg, data.users, data.items, t)

    # -- monitoring: popularity, new users and items, scores (driftloop.recsys_drift) ----------
    def reference(
        self, model: FittedModel, train: pd.DataFrame, spec: DatasetSpec, schema: Any
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        from driftloop.recsys_drift import reference

        return reference(cast(RecsysMFModel, model), train, spec, schema)

    def drift(self, stats: dict[str, Any], window: Source, schema: Any) -> DriftResult:
        from driftloop.recsys_drift import recsys_drift

        return recsys_drift(stats, window, schema)

    def report(
        self,
        reference: pd.DataFrame,
        window: Source,
        schema: Any,
        html_path: Path,
        sample_rows: int,
    ) -> dict[str, Any]:
        from driftloop.recsys_drift import recsys_report

        return recsys_report(reference, window, schema, html_path, sample_rows)


def activity_names(edges: list[float]) -> list[str]:
    """Bucket names for training-interaction counts split at ``edges`` (a count equal to an
    edge falls in the lower bucket): ``1-3``, ``4-10``, ``11+``."""
    lows = [1, *(int(e) + 1 for e in edges)]
    highs = [*(str(int(e)) for e in edges), ""]
    return [f"{lo}-{hi}" if hi else f"{lo}+" for lo, hi in zip(lows, highs, strict=True)]


def _validation_ndcg(model: RecsysMFModel, rel: dict[str, set[str]]) -> float:
    users = list(rel)
    idx, _ = model.top_k(model.user_rows(users), K, np.ones(len(users), bool))
    lists = [[model.items[j] for j in r if j >= 0] for r in idx]
    return ranking_metrics(lists, [rel[u] for u in users], model.catalogue)[f"ndcg{K}"]


FAMILY = RecsysMF()
