"""CT data: DeepLesion's formats, volumes, lesion inputs, preprocessing, the patch cache, the phantom.

The lowest layer: imports only ``vision.config`` and itself.
"""
