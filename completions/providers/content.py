"""A chat message's content: its text parts as one text, and where its images are."""


def flatten_content(content):
    """Return message content as one string, joining its text parts and dropping others."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


def first_image_message(messages):
    """Return the index of the first message with an image content part, or None."""
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list) and any(part["type"] == "image_url" for part in content):
            return index
    return None
