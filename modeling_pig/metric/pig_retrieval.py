"""`evaluate` metric module: text-video retrieval metrics (R@K, MdR, MnR; t2v and v2t; DSL).

Load it offline from its file path (the Hub copy of `evaluate` metrics is not needed):

    import evaluate
    from modeling_pig.metrics import METRIC_MODULE_PATH      # .../modeling_pig/metric/pig_retrieval.py
    metric = evaluate.load(METRIC_MODULE_PATH)
    metric.compute(predictions=sim_rows, references=text_to_video, dsl=True)   # tie_policy="expected"

Each prediction is one text query's row of similarity scores against all videos (so `sim` goes in as
its rows), each reference the index of that text's ground-truth video. Rows may be added in batches
with `add_batch`. The computation is `modeling_pig.metrics.compute_retrieval_metrics`; this file is
only the thin Arrow wrapper around it.
"""

import datasets
import evaluate
import numpy as np

from modeling_pig.metrics import DEFAULT_TIE_POLICY, compute_retrieval_metrics

_DESCRIPTION = """Text-to-video (t2v) and video-to-text (v2t) retrieval metrics under the CLIP4Clip
protocol: R@1, R@5, R@10 (percent), median rank (MdR) and mean rank (MnR), and the number of queries whose
correct item is tied with another candidate. Tie-aware by default: every metric is its expected value under
uniformly random tie-breaking (McSherry & Najork, ECIR 2008), so a constant similarity matrix scores chance
(R@1 = 100/N, MnR = MdR = (N+1)/2); MdR is the median of the per-query expected ranks. Multi-caption sets:
every caption is a t2v query (median: the lower middle value, as CLIP4Clip); for v2t a video's caption group
scores by its best caption. Optional dual softmax (DSL), reported under keys prefixed `dsl_`."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of score rows, one per text query; row i holds the similarity of text i to
        every video (all rows the same length n_video).
    references: list of int, the ground-truth video index of each text query. Every video index in
        [0, n_video) must be the ground truth of at least one text.
    dsl: bool, also report the dual-softmax variant (keys prefixed `dsl_`). Default False.
    tie_policy: "expected" (default), "optimistic" (ties in the query's favour), "pessimistic", or the
        published codes "clip4clip" / "pig" (see modeling_pig.metrics).
Returns:
    dict with t2v_R@1, t2v_R@5, t2v_R@10, t2v_MdR, t2v_MnR, t2v_tied_queries, the same for v2t,
    num_texts, num_videos.
Example:
    >>> metric = evaluate.load(METRIC_MODULE_PATH)
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["t2v_R@1"]
    100.0
"""

_CITATION = """@inproceedings{luo2021clip4clip,
  title={CLIP4Clip: An Empirical Study of CLIP for End to End Video Clip Retrieval},
  author={Luo, Huaishao and Ji, Lei and Zhong, Ming and Chen, Yang and Lei, Wen and Duan, Nan and Li, Tianrui},
  journal={Neurocomputing}, year={2022}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PigRetrieval(evaluate.Metric):
    """Retrieval metrics over a text x video similarity matrix given as per-text rows."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("float32")),
                "references": datasets.Value("int64"),
            }),
        )

    def _compute(self, predictions, references, dsl=False, tie_policy=DEFAULT_TIE_POLICY):
        lengths = {len(row) for row in predictions}
        if len(lengths) != 1:
            raise ValueError(f"every prediction row must score the same number of videos; got row "
                             f"lengths {sorted(lengths)[:5]}")
        sim = np.asarray(predictions, dtype=np.float32)  # [n_text, n_video]
        return compute_retrieval_metrics(sim, np.asarray(references, dtype=np.int64), dsl=dsl,
                                         tie_policy=tie_policy)
