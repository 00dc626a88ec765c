"""The model server that runs INSIDE the example image (SageMaker hosting contract).

``GET /ping`` answers 200 only after every byte under the model directory has been read (and, in
model mode, the ONNX model loaded); ``POST /invocations`` embeds texts, or in bench mode waits a
computed service time. With ``WARMSTART_MODEL_SOURCE`` (an artifact in an OCI registry) the
model is first downloaded into the model directory (:mod:`.download`), as a replica without a
node agent gets its weights. Only the standard library plus onnxruntime, tokenizers and numpy may be
imported here: the image carries this package and nothing else of warmstart.
"""

from __future__ import annotations
