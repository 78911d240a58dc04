"""NeuCRaB, the benchmark of Li et al. (CVPR 2021): judging rankings against fine-tuning ground truth.

- `paper_groundtruth`: the paper's published best fine-tuning accuracies (appendix Tables 7-10, Groups I-IV).
- `evaluate_files`: read rankings (`neucrab rank --format json`, or a long CSV) and a ground truth (a file or
  `paper:groupN`), and report Recall@k, Rel@k, Pearson, Kendall and weighted Kendall per task and measure and
  averaged over tasks (`neucrab evaluate`).
"""
