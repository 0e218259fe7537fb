"""Imported by toy runs (custom_imports) in tests/test_reliability.py: a metric that grows at every evaluation,
so that save_best='evaluations' saves a new best checkpoint each time (which real metrics do not guarantee)."""
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


@METRICS.register_module()
class EvaluationCount(BaseMetric):
    evaluations = 0

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        EvaluationCount.evaluations += 1
        return dict(evaluations=EvaluationCount.evaluations)
