"""vidclip.synthetic: the synthetic world in one package, the offline data of tests, demo and benchmarks.

- ``world.py``: vocabulary (shapes, colours, sizes, backgrounds, directions), clip specs, rendering, mp4 writing;
- ``captions.py``: the world put into words (clip captions, scene descriptions, frame captions);
- ``datasets.py``: datasets in the MSR-VTT layout (``vidclip synth``, ``commands.py``);
- ``scenes.py``: videos of several scenes (``vidclip demo``, the rerank example);
- ``actions.py``: a folder-per-class action set (``python -m vidclip.synthetic.actions``);
- ``rerank_example.py``: a rerank-and-evaluate world (``python -m vidclip.synthetic.rerank_example``);
- ``codedvideo.py``: test videos whose every frame carries its own index.

It builds videos, so it may import video, models, features and encode; nothing below the CLI,
training and the example verbs imports it. Telling synthetic footage apart (the container tag
its videos carry) is :mod:`vidclip.video.provenance`, where the verbs that warn about it can reach.
"""
