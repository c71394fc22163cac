"""
The TokenOCR demo: a Gradio app (`app.py`) that shows one heatmap per query token on a document page.

Start it with `tokenocr demo [--model ...] [--port ...]` or `python demo/app.py`; the folder is also a hub Space as
it is (see its README.md). Importing this package imports neither gradio nor torch: they load when the app starts.
"""
