"""Reading what users give the captioner: photos, clips and folders, with clear errors for
unreadable, odd or oversized input."""

from __future__ import annotations

from captioner.media.clips import KEPT_FRAME_PIXELS, VideoFrame, read_video_frames
from captioner.media.files import MAX_PIXELS, VIDEO_EXTENSIONS, MediaError, checked_file, is_video_path
from captioner.media.photos import (
    PHOTO_FORMATS,
    ImageSource,
    check_photo,
    load_image,
    media_files,
    register_image_plugins,
)

__all__ = [
    "ImageSource",
    "KEPT_FRAME_PIXELS",
    "MAX_PIXELS",
    "MediaError",
    "PHOTO_FORMATS",
    "VIDEO_EXTENSIONS",
    "VideoFrame",
    "check_photo",
    "checked_file",
    "is_video_path",
    "load_image",
    "media_files",
    "read_video_frames",
    "register_image_plugins",
]
