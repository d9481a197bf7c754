"""Find a domain's documents and read them into pages; one clear `DocumentError` per unreadable file."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocumentError
from .injection import find_instructions, strip_markdown_comments

__all__ = ["SUPPORTED_SUFFIXES", "Page", "discover", "read_pages"]

SUPPORTED_SUFFIXES = (".pdf", ".txt", ".md")
log = logging.getLogger("docbot")


@dataclass(frozen=True)
class Page:
    """Text of one PDF page (1-based `number`) or of a whole text file (`number` None)."""

    number: int | None
    text: str


def discover(root: str | Path) -> list[Path]:
    """Supported files under `root`, recursively, sorted; hidden files and folders are skipped."""
    root = Path(root)
    if not root.exists():
        raise DocumentError(f"{root}: no such folder; create it and put .pdf, .txt or .md files in it")
    if not root.is_dir():
        raise DocumentError(f"{root}: is a file, not a folder; pass the folder that holds the documents")
    found = []
    for folder, dirs, files in os.walk(root):  # followlinks=False: a symlinked folder cannot loop
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in SUPPORTED_SUFFIXES]
    return sorted(found)


def read_pages(path: Path) -> list[Page]:
    """The file's text as pages; raises `DocumentError` naming the file and the reason it cannot be used. A
    sentence that gives the assistant orders is warned of, naming the file and line (`injection`); a Markdown
    file's HTML comments, which its readers never see, are left out."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not data.strip():
        raise DocumentError(f"{path}: empty file")
    pages = _read_pdf(path, data) if path.suffix.lower() == ".pdf" else [Page(None, _decode_text(path, data))]
    for page in pages:
        for line, sentence in find_instructions(page.text):
            where = f"page {page.number} line {line}" if page.number is not None else f"line {line}"
            log.warning("%s %s: reads as an instruction to the assistant, kept out of every answer: %.80s",
                        path, where, sentence)
    if path.suffix.lower() == ".md":
        pages = [Page(p.number, strip_markdown_comments(p.text)) for p in pages]
    pages = [p for p in pages if p.text.strip()]
    if not pages:
        what = "no text layer (a scanned PDF? run OCR first)" if path.suffix.lower() == ".pdf" else "no text"
        raise DocumentError(f"{path}: {what}")
    return pages


def _read_pdf(path: Path, data: bytes) -> list[Page]:
    """Pages read by PDFium (pypdfium2): much faster than pypdf, with the same text; it decrypts RC4 and AES
    itself."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    if not data.lstrip().startswith(b"%PDF"):
        raise DocumentError(f"{path}: not a PDF (no %PDF header)")
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise DocumentError(f"{path}: encrypted PDF that needs a password; decrypt it first") from exc
        raise DocumentError(f"{path}: corrupt PDF ({exc})") from exc
    try:
        return [Page(i, _page_text(document[i - 1])) for i in range(1, len(document) + 1)]
    except pdfium.PdfiumError as exc:
        raise DocumentError(f"{path}: corrupt PDF ({exc})") from exc
    finally:
        document.close()


def _page_text(page) -> str:
    """A page's text with "\n" line ends; PDFium marks a hyphen that ends a line as U+0002."""
    textpage = page.get_textpage()
    try:
        return textpage.get_text_bounded().replace("\r\n", "\n").replace("\x02", "-")
    finally:
        textpage.close()
        page.close()


def _decode_text(path: Path, data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252; binary content is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        raise DocumentError(f"{path}: binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s: not UTF-8 (byte %d), read as Windows-1252 (cp1252); save it as UTF-8 if words look wrong",
                    path, exc.start + 1)
        return data.decode("cp1252", errors="replace")
