"""Read a multipart/form-data upload, as the OpenAI SDK sends audio files.

The body is bounded as a JSON body is: by MAX_REQUEST_BYTES, which gateway/middleware.py's
RequestBodyLimit enforces while the body is read (a body past it reaches here with a
Content-Length above the limit, and is answered 413).
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http.multipartparser import MultiPartParserError

from gateway.errors import InvalidRequest, PayloadTooLarge


def form_body(request, file_field="file"):
    """Return ({name: value} of the form's text fields, the bytes of its one file).

    Raise a 413 for a body past MAX_REQUEST_BYTES, a 400 naming `file` for a form
    without a file or with an empty one.
    """
    content_type = request.content_type or ""
    if content_type != "multipart/form-data":
        raise InvalidRequest(
            f"Unsupported content type '{content_type}'; send multipart/form-data "
            f"with the audio in '{file_field}'.",
            code="unsupported_content_type",
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > settings.MAX_REQUEST_BYTES:
        raise PayloadTooLarge(
            f"The request body is larger than {settings.MAX_REQUEST_BYTES} bytes."
        )
    try:
        fields = {name: request.POST.get(name) for name in request.POST}
        upload = request.FILES.get(file_field)
    except RequestDataTooBig:
        raise PayloadTooLarge(
            f"The request body is larger than {settings.MAX_REQUEST_BYTES} bytes."
        ) from None
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent) as error:
        raise InvalidRequest(f"The multipart body could not be read: {error}") from None
    if upload is None:
        raise InvalidRequest(f"Missing the file: send it as '{file_field}'.", param=file_field)
    content = upload.read()
    if not content:
        raise InvalidRequest("The file is empty.", param=file_field)
    return fields, content
