"""Documents as the knowledge base reads them: which files, their text (HTML, CSV, BOM, CRLF),
their metadata in both forms, and what makes a document change."""

from __future__ import annotations

import json

import pytest

from local import documents


@pytest.mark.parametrize(
    "html,text",
    [
        ("<head><style>p{}</style><title>Title</title></head><body>Body</body>", "Body"),  # nested hidden elements
        ("<div><h2>T &amp; C</h2><ul><li>one</li><li>two</li></ul>a<br>b<pre>x   y</pre></div>", "## T & C\n\none\n\ntwo\n\na\n\nb\n\nx y"),
        ("<h1>A</h1><h3>B</h3><h4>C</h4><h5>D</h5><h6>E</h6>", "# A\n\n### B\n\n#### C\n\n##### D\n\n###### E"),
        ("<template><h3>hidden</h3></template><noscript>no</noscript><script>x()</script><p>shown</p>", "shown"),
        ("<h1>  </h1><p>#</p><p>text</p><h2></h2><p>X</p>", "text\n\nX"),  # empty headings and blocks disappear
        ("<span>inline</span> <b>words</b>\n<i>stay</i>", "inline words stay"),
        ("", ""),
    ],
)
def test_html_becomes_its_visible_text_in_blocks(html, text):
    assert documents.html_text(html) == text


@pytest.mark.parametrize(
    "csv,text",
    [
        ("", ""),
        ("name,days\n", ""),  # a header alone holds no row
        ('name,days\n"logs, audit",30\nbackups,  \n,\n', "name: logs, audit; days: 30.\nname: backups."),
        ("a,b\n1,2,3\n4\n", "a: 1; b: 2.\na: 4."),  # extra cells have no header; missing ones are left out
    ],
)
def test_csv_rows_become_header_value_lines(csv, text):
    assert documents.csv_text(csv) == text


def _doc(folder, name, content: bytes, metadata=None):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if metadata is not None:
        (folder / f"{name}.metadata.json").write_text(metadata if isinstance(metadata, str) else json.dumps(metadata))


def test_discover_walks_subfolders_and_skips_what_is_not_a_document(tmp_path):
    _doc(tmp_path, "Notes.MD", b"x")
    _doc(tmp_path, "sub/deeper/page.HTML", b"<p>x</p>")
    _doc(tmp_path, "sub/README.md", b"about")
    _doc(tmp_path, ".git/config.txt", b"hidden folder")
    _doc(tmp_path, "sub/.draft.md", b"hidden file")
    _doc(tmp_path, "table.csv", b"a\n1\n", {"metadataAttributes": {}})
    _doc(tmp_path, "archive.zip", b"PK")
    _doc(tmp_path, "orphan.metadata.json", b"{}")
    (tmp_path / "empty-folder").mkdir()
    sources, unsupported = documents.discover(tmp_path)
    assert [(s.doc_id, s.metadata_path is not None) for s in sources] == [
        ("Notes.MD", False), ("sub/deeper/page.HTML", False), ("table.csv", True)
    ]
    assert unsupported == ["archive.zip"]
    with pytest.raises(documents.DocumentError, match="not a folder of documents"):
        documents.discover(tmp_path / "Notes.MD")


def test_read_decodes_each_format(tmp_path):
    _doc(tmp_path, "a.md", "\ufeffLine one\r\nLine two".encode())
    _doc(tmp_path, "b.htm", b"<p>Para</p>")
    _doc(tmp_path, "c.CSV", b"k,v\nx,1\n")
    _doc(tmp_path, "d.txt", b"<p>not html</p>\r\n")
    read = {s.doc_id: documents.read(s) for s in documents.discover(tmp_path)[0]}
    assert {k: v.text for k, v in read.items()} == {"a.md": "Line one\nLine two", "b.htm": "Para", "c.CSV": "k: x; v: 1.", "d.txt": "<p>not html</p>\n"}
    assert all(v.metadata == {} and v.doc_id == k for k, v in read.items())


@pytest.mark.parametrize(
    "attributes,metadata",
    [
        ({"n": 3, "f": 1.5, "b": True, "s": "x", "none": None, "list": ["a", "b"]}, {"n": 3, "f": 1.5, "b": True, "s": "x", "none": None, "list": ["a", "b"]}),
        ({"t": {"value": {"type": "string", "stringValue": "lower-case type"}}}, {"t": "lower-case type"}),
        ({"t": {"value": {"type": "NUMBER", "numberValue": 2.5}}}, {"t": 2.5}),
        ({"t": {"value": {"type": "BOOLEAN", "booleanValue": True}}}, {"t": True}),
        ({"t": {"value": {"type": "STRING_LIST", "stringListValue": []}}}, {"t": []}),
    ],
)
def test_metadata_values(tmp_path, attributes, metadata):
    _doc(tmp_path, "d.md", b"x", {"metadataAttributes": attributes})
    assert documents.read(documents.discover(tmp_path)[0][0]).metadata == metadata


@pytest.mark.parametrize(
    "body,message",
    [
        ("[1]", 'd.md.metadata.json: expected {"metadataAttributes": {...}}'),
        ('{"metadataAttributes": [1]}', 'd.md.metadata.json: expected {"metadataAttributes": {...}}'),
        ('{"metadataAttributes": {"k": {"type": "STRING"}}}', "d.md.metadata.json: k: an object needs a 'value' with a type"),
        ('{"metadataAttributes": {"k": {"value": {"type": "DATE", "dateValue": 1}}}}',
         "d.md.metadata.json: k: type must be STRING, NUMBER, BOOLEAN or STRING_LIST with its value"),
        ('{"metadataAttributes": {"k": {"value": {"type": "STRING"}}}}',
         "d.md.metadata.json: k: type must be STRING, NUMBER, BOOLEAN or STRING_LIST with its value"),
        ('{"metadataAttributes": {"k": {"value": {"stringValue": "x"}}}}',
         "d.md.metadata.json: k: type must be STRING, NUMBER, BOOLEAN or STRING_LIST with its value"),
        ('{"metadataAttributes": {"k": ["a", 1]}}', "d.md.metadata.json: k: a list must hold strings only"),
        ('{"metadataAttributes": {"k": {"value": {"type": "STRING_LIST", "stringListValue": [2]}}}}', "d.md.metadata.json: k: a list must hold strings only"),
        ('{"metadataAttributes": {"k": {"value": {"type": "STRING", "stringValue": {"x": 1}}}}}', "d.md.metadata.json: k: unsupported value {'x': 1}"),
        ('{"metadataAttributes": {"k": [["a"]]}}', "d.md.metadata.json: k: a list must hold strings only"),
        (b"\xff\xfe{}", "d.md.metadata.json: not valid JSON"),
    ],
)
def test_bad_metadata_is_one_line_naming_the_file_and_field(tmp_path, body, message):
    _doc(tmp_path, "d.md", b"x")
    (tmp_path / "d.md.metadata.json").write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(documents.DocumentError) as error:
        documents.read(documents.discover(tmp_path)[0][0])
    assert str(error.value).startswith(message)


def test_a_metadata_file_with_a_bom_is_read(tmp_path):
    _doc(tmp_path, "d.md", b"x", '\ufeff{"metadataAttributes": {"k": "v"}}')
    assert documents.read(documents.discover(tmp_path)[0][0]).metadata == {"k": "v"}


def test_not_utf8_names_the_byte(tmp_path):
    _doc(tmp_path, "d.md", b"ok \xe9t\xe9")
    with pytest.raises(documents.DocumentError, match=r"^d\.md: not UTF-8 text \(invalid continuation byte at byte 3\)$"):
        documents.read(documents.discover(tmp_path)[0][0])


def test_the_fingerprint_changes_with_the_content_or_the_metadata(tmp_path):
    _doc(tmp_path, "d.md", b"text")

    def fingerprint():
        return documents.discover(tmp_path)[0][0].fingerprint()

    plain = fingerprint()
    assert plain == fingerprint() and len(plain) == 64
    (tmp_path / "d.md.metadata.json").write_text("")  # an empty metadata file is still a change
    with_empty = fingerprint()
    (tmp_path / "d.md.metadata.json").write_text('{"metadataAttributes": {}}')
    with_metadata = fingerprint()
    (tmp_path / "d.md.metadata.json").unlink()
    (tmp_path / "d.md").write_bytes(b"text ")
    assert len({plain, with_empty, with_metadata, fingerprint()}) == 4


@pytest.mark.parametrize(
    "value,keywords",
    [(None, set()), ("a", {"a"}), (2024, {"2024"}), (2024.0, {"2024.0"}), (True, {"true"}), (False, {"false"}), (["a", "b"], {"a", "b"}), ([], set())],
)
def test_metadata_values_are_matched_as_keyword_text(value, keywords):
    assert documents.keywords(value) == keywords
