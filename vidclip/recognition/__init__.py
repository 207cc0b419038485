"""vidclip.recognition: zero-shot and training-free few-shot video classification.

Pooled, L2-normalised video features ``[N, D]`` (encoded once into a feature store) and the
text classifier ``[C, D]`` (prompt ensemble over class names) meet here. ``datasets.py`` reads
class-folder / UCF101 / HMDB51 / Kinetics / CSV layouts, ``zeroshot.py`` builds the text
classifier, ``fewshot.py`` holds Tip-Adapter(-F), GDA, ProKeR, APE and a linear probe,
``classifier.py`` saves and loads a fitted classifier, ``run.py`` drives ``vidclip classify``.
"""
