"""The playground: pick a run, a user (or type a history), an intention and k; see every model's list.

Not a pipeline stage: an app on top of a finished run, for `notebooks/08_playground.ipynb`, which
only wires ipywidgets to this module. Like the runner, it reads every stage's outputs, through each
stage's public loader (`data.load_prepared`, `sasrec.load_sasrec`, stage 06's `load_model`).

A request is a history (catalog ids), an intention (`recnb.tasks.Intent`: none, +C, −C, ≤ / ≈ / ≥ m
of C) and k. The prompt is the paper's template (`recnb.prompts.render_instruction`), as stage 03
renders it. Every model answers it the way stage 06 does:

- SASRec ranks the whole catalog for the history (`sasrec.score_histories`, history masked) and, for
  a control intention, its ranking is filtered to obey it (`evaluation.predict.teacher_list`);
- Popularity: the most popular titles not in the history, filtered the same way;
- an LLM (the zero-shot base or a stage 04/05 model) decodes greedily, optionally under the catalog
  constraint (`+constrained`).

Each answer is parsed, matched (fuzzy, the paper's convention) and scored with `recnb.metrics`;
`to_html` lays the lists side by side with stage 07's highlighting (target, in C, history, invented).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd

from recnb import artifacts as col
from recnb import llm, metrics, paths, prompts, record
from recnb.answer import format_item_list, parse_titles
from recnb.catalog import Catalog
from recnb.data import load_prepared
from recnb.evaluation.predict import (
    CONSTRAINED,
    ModelSpec,
    generation_suffix,
    load_model,
    popularity_ranking,
    teacher_list,
)
from recnb.report.case_study import HTML_STYLE, TAGS, tag_items
from recnb.sasrec import load_sasrec, score_histories
from recnb.tasks import PROPORTION_KINDS, Intent

# what the notebook's dropdown shows -> Intent kind
INTENTIONS = {"none (plain recommendation)": "I0", "more C (+C)": "+C", "no C (−C)": "-C",
              "at most m of C (≤)": "<=", "about m of C (≈)": "~=", "at least m of C (≥)": ">="}
TASK_OF_KIND = {"I0": "I0", "+C": "I1+C", "-C": "I1-C", "<=": "I2<=", "~=": "I2~=", ">=": "I2>="}


@dataclass(frozen=True)
class Request:
    """What every model is asked: a history, an intention and k (target: the user's held-out item)."""

    history: tuple[int, ...]
    intent: Intent
    k: int = 10
    target: int | None = None
    user_id: int | None = None

    def __post_init__(self) -> None:  # `Intent` checks its kind, category and m itself
        if self.intent.kind in PROPORTION_KINDS and not 0 < self.intent.m < 1:
            raise ValueError(f"intention {self.intent.kind}: the share m must be strictly between 0 and 1, "
                             f"got {self.intent.m}")
        if not 1 <= self.k <= 20:
            raise ValueError(f"k = {self.k}: ask for 1 to 20 items")


@dataclass
class Answer:
    """One model's list for a request: its text, the tagged titles and its metrics (`recnb.metrics`)."""

    model: str
    raw: str
    tagged: list[tuple[str, str | None]]
    metrics: dict = field(default_factory=dict)


def finished_runs(outputs_dir: str = "outputs") -> list[str]:
    """Runs under `outputs_dir` whose stage 06 finished (what the playground can open)."""
    root = paths.run_dir(outputs_dir, "x").parent
    return sorted(p.name for p in root.iterdir() if (p / "06_eval" / col.METRICS_FILE).exists()) if root.exists() else []


class Playground:
    """One finished run's catalog, teacher and models, loaded lazily and kept (one LLM at a time)."""

    def __init__(self, run: str, outputs_dir: str = "outputs") -> None:
        self.root = paths.run_dir(outputs_dir, run)
        eval_params = self.root / "06_eval" / col.PARAMS_FILE
        if not eval_params.exists():
            raise FileNotFoundError(f"{eval_params} not found: the playground opens runs whose stage 06 finished "
                                    f"({', '.join(finished_runs(outputs_dir)) or 'none yet'}; make test builds 'tiny')")
        params = record.read_json(eval_params)
        self.base_model = params["base_model"]
        self.max_new_tokens = int(params.get("max_new_tokens", 100))
        # params.json sorts its keys; stage 06's metrics.json keeps the table's row order
        order = record.read_json(self.root / "06_eval" / col.METRICS_FILE).get("models", [])
        ranked = [m for m in dict.fromkeys(o.removesuffix(CONSTRAINED) for o in order) if m in params["models"]]
        self.models: dict[str, str] = {m: params["models"][m] for m in [*ranked, *params["models"]]}
        self.items = load_prepared(self.root / "01_data_duckdb").items
        self.catalog = Catalog(self.items)
        self._ids = set(self.items[col.ITEM].astype(int))
        topk = pd.read_parquet(self.root / "02_sasrec" / col.TEACHER_FILE)
        self.tests = topk[topk["split"] == "test"].set_index(col.USER)
        self.teacher = load_sasrec(self.root / "02_sasrec" / col.SASREC_FILE)
        self._llm: tuple[str, object, object] | None = None

    @property
    def users(self) -> list[int]:
        return sorted(int(u) for u in self.tests.index)

    def for_user(self, user: int, intent: Intent, k: int = 10) -> Request:
        """A request on a test user's history (as the teacher saw it) with their held-out item as target."""
        if user not in self.tests.index:
            raise KeyError(f"user {user} has no test row in {self.root / '02_sasrec'}; pick one of playground.users")
        row = self.tests.loc[user]
        return Request(tuple(int(i) for i in row["history"]), intent, k, int(row["target"]), int(user))

    def for_titles(self, titles: list[str], intent: Intent, k: int = 10) -> Request:
        """A request on a typed history (titles matched fuzzily); an unknown title is an error naming it."""
        titles = [t.strip() for t in titles if t.strip()]
        if not titles:
            raise ValueError("type at least one history title (one per line)")
        ids = self.catalog.match_many(titles, fuzzy=True)
        unknown = [t for t, i in zip(titles, ids) if i is None]
        if unknown:
            raise ValueError(f"not in the catalog: {', '.join(repr(t) for t in unknown[:3])}; "
                             "check the spelling and the year, e.g. 'Toy Story (1995)'")
        return Request(tuple(ids), intent, k)

    def messages(self, req: Request) -> list[dict[str, str]]:
        """The chat prompt of a request (the paper's template, as stage 03 renders it)."""
        text = prompts.render_instruction(TASK_OF_KIND[req.intent.kind], req.k, self.catalog.title_list(req.history),
                                          category=req.intent.category, m=req.intent.m)
        return prompts.chat_messages(text)

    def answer(self, label: str, req: Request) -> Answer:
        """`label`'s list (a key of the run's stage-06 `models`, `+constrained` for catalog-only decoding)."""
        constrained = label.endswith(CONSTRAINED)
        source = self.models.get(label.removesuffix(CONSTRAINED))
        if source is None:
            raise KeyError(f"model {label!r} is not in this run's stage 06 ({', '.join(self.models)})")
        if source in ("sasrec", "popularity"):
            if constrained:
                raise ValueError(f"{label}: a ranking is already catalog-only; constrained decoding is for LLMs")
            ranking = self._ranking(source, req)
            raw = format_item_list(self.catalog.title_list(teacher_list(ranking, req.intent, req.k, self.catalog)))
        else:
            raw = self._generate(label.removesuffix(CONSTRAINED), source, req, constrained)
        return self._score(label, raw, req)

    def compare(self, req: Request, labels: list[str]) -> list[Answer]:
        return [self.answer(label, req) for label in labels]

    def _ranking(self, source: str, req: Request) -> list[int]:
        history = set(req.history)
        if source == "popularity":
            return [i for i in popularity_ranking(self.items) if i not in history]
        scores = score_histories(self.teacher, [list(req.history)])[0]
        order = scores.argsort(descending=True).tolist()
        return [i for i in order if i in self._ids and i not in history]

    def _generate(self, label: str, source: str, req: Request, constrained: bool) -> str:
        from transformers import LogitsProcessorList

        from recnb.evaluation.constrained import CatalogConstraint

        if self._llm is None or self._llm[0] != label:
            from transformers.utils import logging as hf_logging

            self._llm = None  # one LLM in memory at a time
            path = None if source == "base" else paths.input_dir(self.root.parent, self.root.name, source)
            hf_logging.disable_progress_bar()  # no "Loading weights" bar in the widget's output area
            try:
                self._llm = (label, *load_model(ModelSpec(label, source, path), self.base_model))
            finally:
                hf_logging.enable_progress_bar()
        _, model, tok = self._llm
        how = llm.Decoding(max_new_tokens=self.max_new_tokens, batch_size=1)
        processors = None
        if constrained:
            constraint = CatalogConstraint(tok, self.items[col.ITEM].tolist(), self.items[col.TITLE].tolist(),
                                           generation_suffix=generation_suffix(tok), eos_token_ids=[tok.eos_token_id],
                                           max_new_tokens=how.max_new_tokens, forbid_repeats=True)
            constraint.register(llm.render_prompts(tok, [self.messages(req)], how.max_prompt_tokens),
                                [list(req.history)], [req.k])
            processors = LogitsProcessorList([constraint])
        return llm.generate(model, tok, [self.messages(req)], how, logits_processor=processors, progress=False,
                            item_limits=[req.k])[0]

    def _score(self, label: str, raw: str, req: Request) -> Answer:
        titles = parse_titles(raw)
        items = self.catalog.match_many(titles, fuzzy=True)
        in_c = self.catalog.items_in(req.intent.category) if req.intent.category else frozenset()
        row = metrics.measure_list(items, titles, k=req.k, target=req.target, history=req.history, intent=req.intent,
                                   category_items=in_c)
        return Answer(label, raw, tag_items(items, titles, req.target, list(req.history), in_c), row)


def describe(req: Request, catalog: Catalog) -> str:
    """The request in words (for the table's caption)."""
    who = f"user {req.user_id}" if req.user_id is not None else "a typed history"
    what = {"I0": "no intention", "+C": f"more {req.intent.category}", "-C": f"no {req.intent.category}",
            "<=": f"at most {req.intent.m:.0%} {req.intent.category}" if req.intent.m else "",
            "~=": f"about {req.intent.m:.0%} {req.intent.category}" if req.intent.m else "",
            ">=": f"at least {req.intent.m:.0%} {req.intent.category}" if req.intent.m else ""}[req.intent.kind]
    target = f"; held-out item: {catalog.title(req.target)}" if req.target is not None else ""
    return f"{who}, {what}, k = {req.k}{target}"


def metric_text(row: dict) -> str:
    """One list's metrics in words (`recnb.metrics.measure_list`'s row; a figure that does not apply is left out)."""
    n = row.get("n_items", 0)
    parts = []
    if row.get("hit") is not None:
        parts.append("hit" if row["hit"] else "no hit")
    if row.get("tcp") is not None:
        parts.append(f"TCP {100 * row['tcp']:.0f} %")
    if row.get("cpa") is not None:
        parts.append("CPA met" if row["cpa"] else "CPA missed")
    parts.append("k items" if row.get("correct_count") else "wrong count")
    parts += [f"{name} {int(row.get(key, 0))}/{n}" for key, name in
              (("repeat", "repeats"), ("non_exist", "invented"), ("in_history", "from history"))]
    return " · ".join(parts)


def to_html(req: Request, answers: list[Answer], catalog: Catalog) -> str:
    """The lists side by side: one column per model, one row per position, stage 07's highlighting,
    each list's metrics underneath."""
    depth = max([req.k, *(len(a.tagged) for a in answers)])
    head = "".join(f"<th>{html.escape(a.model)}</th>" for a in answers)
    rows = []
    for pos in range(depth):
        cells = []
        for a in answers:
            if pos < len(a.tagged):
                title, tag = a.tagged[pos]
                cells.append(f"<td style='text-align:left'><span style='{HTML_STYLE.get(tag, '')}'>"
                             f"{html.escape(title[:80])}</span></td>")
            else:
                cells.append("<td></td>")
        rows.append(f"<tr><td>{pos + 1}</td>{''.join(cells)}</tr>")
    rows.append("<tr><td></td>" + "".join(f"<td style='text-align:left;font-size:smaller'>{html.escape(metric_text(a.metrics))}"
                                          "</td>" for a in answers) + "</tr>")
    legend = " · ".join(f"<span style='{HTML_STYLE[t]}'>{t.replace('_', ' ')}</span>" for t in TAGS)
    return (f"<p><b>{html.escape(describe(req, catalog))}</b></p><table><tr><th>#</th>{head}</tr>{''.join(rows)}"
            f"</table><p>{legend}</p>")


class Panel:
    """The widgets of notebook 08: run, user or typed history, intention, k, models, and a button.

    `Panel(outputs_dir).widget` is what the notebook displays; the button's handler (`show`) builds
    the request, asks every selected model and writes `to_html` into the output area (a bad request
    is one line of text there, not a traceback). `last_html` keeps the latest table for tests.
    """

    def __init__(self, outputs_dir: str = "outputs", run: str | None = None) -> None:
        import ipywidgets as w

        runs = finished_runs(outputs_dir)
        if not runs:
            raise FileNotFoundError(f"no run under {outputs_dir}/ has finished stage 06; run make test (tiny) or "
                                    "make run (ml-100k) first")
        self.outputs_dir = outputs_dir
        self.run = w.Dropdown(options=runs, value=run if run in runs else runs[0], description="run")
        self.source = w.ToggleButtons(options=["test user", "typed history"], description="history")
        self.user = w.Dropdown(description="user")
        self.history = w.Textarea(placeholder="one catalog title per line", description="titles",
                                  layout=w.Layout(width="40em", height="6em"))
        self.intention = w.Dropdown(options=list(INTENTIONS), description="intention")
        self.category = w.Dropdown(description="category C")
        self.m = w.FloatSlider(value=0.3, min=0.1, max=0.9, step=0.1, description="share m", readout_format=".0%")
        self.k = w.IntSlider(value=10, min=1, max=20, description="k")
        self.models = w.SelectMultiple(description="models", rows=6)
        self.button = w.Button(description="Recommend", button_style="primary")
        self.out = w.Output()
        self.last_html = ""
        self.button.on_click(self.show)
        self.run.observe(lambda change: self.open(change["new"]), names="value")
        self.open(self.run.value)
        self.widget = w.VBox([self.run, self.source, w.HBox([self.user, self.history]),
                              w.HBox([self.intention, self.category, self.m, self.k]), self.models, self.button, self.out])

    def open(self, run: str) -> None:
        """Load a run and refill the choices that depend on it."""
        self.pg = Playground(run, self.outputs_dir)
        self.user.options = self.pg.users
        self.category.options = self.pg.catalog.categories
        llms = [m for m, src in self.pg.models.items() if src not in ("sasrec", "popularity")]
        self.models.options = [*self.pg.models, *(m + CONSTRAINED for m in llms)]
        self.models.value = tuple(self.pg.models)

    def request(self) -> Request:
        kind = INTENTIONS[self.intention.value]
        intent = Intent(kind, None if kind == "I0" else self.category.value,
                        round(self.m.value, 2) if kind in PROPORTION_KINDS else None)
        if self.source.value == "test user":
            return self.pg.for_user(self.user.value, intent, self.k.value)
        return self.pg.for_titles(self.history.value.splitlines(), intent, self.k.value)

    def show(self, _button=None) -> None:
        """The button's handler: every selected model's list for the current request."""
        from IPython.display import HTML, clear_output, display

        with self.out:
            clear_output()
            try:
                req = self.request()
                self.last_html = to_html(req, self.pg.compare(req, list(self.models.value)), self.pg.catalog)
            except (ValueError, KeyError) as err:
                self.last_html = f"<p style='color:#b42318'>{html.escape(str(err))}</p>"
            display(HTML(self.last_html))
