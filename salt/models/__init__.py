"""Models: the video ViT encoder, the latent predictor and the pixel decoder."""

from salt.models.encoder import VideoViT, build_encoder
from salt.models.pixel_decoder import DEFAULT_PIXEL_DECODER, build_pixel_decoder
from salt.models.predictor import DEFAULT_PREDICTOR, build_predictor
from salt.models.sizes import ENCODER_SIZES, EncoderSpec, get_spec
from salt.models.token_decoder import DecoderSpec, TokenDecoder

__all__ = [
    "DEFAULT_PIXEL_DECODER", "DEFAULT_PREDICTOR", "ENCODER_SIZES", "DecoderSpec", "EncoderSpec", "TokenDecoder",
    "VideoViT", "build_encoder", "build_pixel_decoder", "build_predictor", "get_spec",
]
