"""The general-language readers (model/corpus/) on small fixtures in the real formats (tests/fixtures/corpus/):
a .mo made by msgfmt, a .qm made by lrelease, lines of Hedgewars' Lua locale table, a roff man page pair, Mallard,
DocBook and HTML page pairs, and a MediaWiki JSON pair. No network."""

import gzip
import shutil
from pathlib import Path

import pytest

from model.corpus.blocks import (
    align, docbook_blocks, document_pairs, html_blocks, mallard_blocks, same_name_pages,
)
from model.corpus.gettext_mo import mo_pairs
from model.corpus.json_i18n import json_pairs
from model.corpus.lua_locale import lua_locale_pairs
from model.corpus.qm import QmError, read_qm
from model.corpus.roff import man_blocks, man_page_pairs, unescape
from model.corpus.text import consistent, markup_to_text, sentence_pairs, split_paragraphs
from model.corpus_sources import mo_entries

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "corpus"


def test_mo_catalog_gives_msgid_msgstr_with_markup_removed_and_placeholders_kept():
    entries = dict(mo_entries(FIXTURES / "wesnoth-test.mo"))
    assert "one turn" not in entries and "Untranslated line stays" not in entries  # plural, empty msgstr
    assert entries["I am ready to fight."] == "Ich bin bereit zu kämpfen."  # msgctxt dropped
    pairs = list(mo_pairs([FIXTURES / "wesnoth-test.mo"], markup=True))
    assert ("Victory: Defeat $enemy_leader| before the end of turns",
            "Sieg: Besiege $enemy_leader| vor Ablauf der Runden") in pairs
    assert ("translator-credits", "Max Mustermann <max@example.org>") in pairs  # dropped later by model.data


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="msgfmt (Debian package gettext) is not installed")
def test_the_mo_fixture_is_what_msgfmt_makes_of_its_po_source(tmp_path):
    import subprocess

    subprocess.run(["msgfmt", "-o", str(tmp_path / "x.mo"), str(FIXTURES / "wesnoth-test.po")], check=True)
    assert dict(mo_entries(tmp_path / "x.mo")) == dict(mo_entries(FIXTURES / "wesnoth-test.mo"))


def test_paragraph_pairs_split_into_sentences_only_when_both_sides_agree():
    en = "We must hurry. The orcs will be here by nightfall! Gather the men."
    de = "Wir müssen uns beeilen. Die Orks werden bei Einbruch der Nacht hier sein! Sammelt die Männer."
    assert sentence_pairs(en, de) == [("We must hurry.", "Wir müssen uns beeilen."),
                                      ("The orcs will be here by nightfall!",
                                       "Die Orks werden bei Einbruch der Nacht hier sein!"),
                                      ("Gather the men.", "Sammelt die Männer.")]
    assert sentence_pairs("Open it. Then close it.", "Öffnen und schließen Sie es.") == [
        ("Open it. Then close it.", "Öffnen und schließen Sie es.")]
    assert list(split_paragraphs([("Dr. Smith  came.\nHe left.", "Dr. Smith kam.\nEr ging.")])) == [
        ("Dr. Smith came.", "Dr. Smith kam."), ("He left.", "Er ging.")]


def test_markup_to_text_removes_tags_and_unescapes_entities():
    assert markup_to_text("<span color='red'>Warning:</span> <b>Tom</b> &amp; Jerry") == "Warning: Tom & Jerry"
    assert markup_to_text("a &lt; b and 3 > 2") == "a < b and 3 > 2"


def test_qm_catalog_made_by_lrelease():
    assert read_qm(FIXTURES / "activities_de.qm") == [
        ("ActivityInfo", "Drop the weights on the left side of the scales to balance it.",
         "Stelle Gewichte auf der linken Seite zusammen, um die Waage auszugleichen."),
        ("ActivityInfo", "Learn additions", "Lerne die Addition."),
        ("WarnMonster", "Be careful, a troggle!", "Sei vorsichtig, ein Troggel!"),
    ]  # the unfinished message is not in the file, the plural (numerus) one is skipped


def test_qm_reader_refuses_other_files(tmp_path):
    (tmp_path / "x.qm").write_bytes(b"not a catalog at all")
    with pytest.raises(QmError):
        read_qm(tmp_path / "x.qm")


def test_roff_escapes_and_blocks():
    assert unescape(r"\fB\-\-sort\fR and \(lqquoted\(rq \e \(em x\&") == "--sort and “quoted” \\ — x"
    blocks = man_blocks((FIXTURES / "ls.en.1").read_text())
    texts = [text for _, text in blocks]
    assert texts == [
        "NAME", "ls - list directory contents", "DESCRIPTION",
        "List information about the FILEs (the current directory by default). Sort entries alphabetically if none "
        "of -cftuvSUX nor --sort is specified.",
        "Mandatory arguments to long options are mandatory for short options too.",
        "-a, --all", "do not ignore entries starting with .", "--author",
        "with -l, print the author of each file", "See dircolors(1) for details.",
        "AUTHOR", "Written by Richard M. Stallman and David MacKenzie.",
    ]  # the .nf block (a command) is skipped


def test_man_pages_align_by_block_and_drop_the_translators_section(tmp_path):
    for language, root in (("en", tmp_path / "man"), ("de", tmp_path / "man" / "de")):
        (root / "man1").mkdir(parents=True, exist_ok=True)
        (root / "man1" / "ls.1.gz").write_bytes(gzip.compress((FIXTURES / f"ls.{language}.1").read_bytes()))
    pairs = list(man_page_pairs([tmp_path / "man"], tmp_path / "man" / "de"))
    assert len(pairs) == 12
    assert ("See dircolors(1) for details.", "Siehe dircolors(1) für Einzelheiten.") in pairs
    assert ("with -l, print the author of each file", "Mit -l den Autor jeder Datei ausgeben") in pairs
    assert not any("Eichwalder" in de for _, de in pairs)


def test_mallard_pages_align_and_skip_credits_and_screens():
    pages = same_name_pages(FIXTURES / "mallard" / "C", FIXTURES / "mallard" / "de", "*/*.page")
    pairs = list(document_pairs(pages, mallard_blocks))
    assert pairs == [  # <info> (credits, translators, the page's description) is metadata: skipped
        ("Print a booklet", "Eine Broschüre drucken"),
        ("To print a booklet, open the Print dialog. Then press CtrlP.",
         "Um eine Broschüre zu drucken, öffnen Sie den Dialog Drucken. Drücken Sie dann StrgP."),
        ("Click Page Setup.", "Klicken Sie auf Seite einrichten."),
        ("Select booklet.pdf and click Print.", "Wählen Sie booklet.pdf und klicken Sie auf Drucken."),
    ]


def test_docbook_chapters_align_and_skip_metadata_and_screens():
    pairs = list(document_pairs(same_name_pages(FIXTURES / "docbook" / "C", FIXTURES / "docbook" / "de", "*.xml"),
                                lambda path: docbook_blocks(path, {})))
    assert pairs == [
        ("Desktop Basics", "Grundlagen der Arbeitsfläche"),
        ("The panel is at the top of the screen. It holds the Applications menu.",
         "Das Panel befindet sich oben auf dem Bildschirm. Es enthält das Menü Anwendungen."),
        ("Drag a launcher onto the panel.", "Ziehen Sie einen Starter auf das Panel."),
    ]


def test_docbook_entities_come_from_the_given_table(tmp_path):
    (tmp_path / "index.docbook").write_text(
        '<?xml version="1.0"?><!DOCTYPE book [<!ENTITY kappname "Dolphin">]>'
        "<book><para>&kappname; shows files &amp; folders in &kde;.</para></book>", encoding="utf-8")
    assert docbook_blocks(tmp_path / "index.docbook", {"kappname": "Dolphin", "kde": "KDE"}) == [
        (False, "Dolphin shows files & folders in KDE.")]


def test_html_pages_align_by_name_and_block_order():
    pages = same_name_pages(FIXTURES / "html", FIXTURES / "html", "*.en.html", lambda p: p.replace(".en.", ".de."))
    pairs = list(document_pairs(pages, html_blocks))
    assert pairs == [
        ("1.1. Console basics", "1.1. Grundlagen der Konsole"),
        ("The system is managed from the shell. Type ls -l and press Enter.",
         "Das System wird über die Shell verwaltet. Geben Sie ls -l ein und drücken Sie die Eingabetaste."),
        ("Use man to read the manual.", "Verwenden Sie man, um das Handbuch zu lesen."),
        ("Log out with exit.", "Melden Sie sich mit exit ab."),
        ("Ctrl-D", "Strg-D"), ("End of input", "Ende der Eingabe"),
    ]  # <pre>, <script> and the head's <title>/<style> are not running text; the ¶ anchors are dropped


def test_a_shifted_alignment_is_not_consistent_and_gives_nothing():
    english = [(False, "A short first paragraph here."), (False, "A much longer second paragraph " * 4),
               (False, "Third paragraph of medium length."), (False, "Fourth one, also of medium size.")]
    german = [(False, "Ein viel längerer zweiter Absatz " * 4), (False, "Ein kurzer erster Absatz hier.")] * 2
    assert align(english, german) == []
    assert consistent([("x" * 30, "y" * 33)] * 5)


def test_json_messages_align_by_key_and_skip_metadata():
    pairs = list(json_pairs([FIXTURES / "i18n"]))
    assert pairs == [
        ("Search", "Suchen"),
        ("Showing $1 results for $2.", "Es werden $1 Ergebnisse für $2 angezeigt."),
        ("There were no results matching the query.",
         "Es wurden keine Ergebnisse gefunden, die der Suchanfrage entsprechen."),
        ("See {{PLURAL:$1|the help page|the help pages}}.", "Siehe {{PLURAL:$1|die Hilfeseite|die Hilfeseiten}}."),
    ]  # the last is dropped by model.data's template filter


KDE_PAGE = ('<FILENAME filename="{name}"><html><head><title>{title}</title></head><body><div id="content">'
            '<div id="header">KDE</div><div class="navCenter"><table class="navigation"><tr><td>{nav}</td></tr>'
            '</table></div><div id="contentBody"><div class="titlepage"><h1 class="title">{title}</h1>'
            '<div class="authorgroup"><p class="author">Jane Doe <code class="email">&lt;jane@example.org&gt;</code>'
            '</p></div></div><p>{text}</p></div></div></body></html></FILENAME>')


def test_kde_handbook_caches_pair_pages_by_file_name_without_navigation_or_credits(tmp_path):
    import bz2

    pages = {
        "en": [("index.html", "The Konsole Handbook", "Next", "Konsole is KDE's terminal emulator."),
               ("only-en.html", "Extra", "Next", "This page was not translated.")],
        "de": [("index.html", "Das Handbuch zu Konsole", "Weiter", "Konsole ist der Terminal-Emulator für KDE.")],
    }
    for language, content in pages.items():
        text = "".join(KDE_PAGE.format(name=n, title=t, nav=v, text=x) for n, t, v, x in content)
        (tmp_path / f"{language}.cache.bz2").write_bytes(bz2.compress(text.encode("utf-8")))
    from model.corpus.blocks import kde_handbook_pairs

    assert list(kde_handbook_pairs(tmp_path / "en.cache.bz2", tmp_path / "de.cache.bz2")) == [
        ("The Konsole Handbook", "Das Handbuch zu Konsole"),
        ("Konsole is KDE's terminal emulator.", "Konsole ist der Terminal-Emulator für KDE."),
    ]


def test_firefox_fluent_and_properties_pair_by_path_and_id(tmp_path):
    import zipfile

    from model.corpus.mozilla import firefox_pairs

    source = FIXTURES / "firefox"
    with zipfile.ZipFile(tmp_path / "omni.ja", "w") as omni:  # the layout of firefox-esr's browser/omni.ja
        for name in ("brand.ftl", "aboutDialog.ftl"):
            omni.write(source / "en-US" / name, f"localization/en-US/browser/{name}")
        omni.write(source / "en-US" / "browser.properties", "chrome/en-US/locale/browser/browser.properties")
    with zipfile.ZipFile(tmp_path / "langpack-de@firefox-esr.mozilla.org.xpi", "w") as pack:
        for name in ("brand.ftl", "aboutDialog.ftl"):
            pack.write(source / "de" / name, f"localization/de/browser/{name}")
        pack.write(source / "de" / "browser.properties", "chrome/de/locale/browser/browser.properties")
    pairs = list(firefox_pairs([tmp_path / "omni.ja"], tmp_path / "langpack-de@firefox-esr.mozilla.org.xpi"))
    assert pairs == [  # files in archive order: chrome/… before localization/…
        ("Save the page as a file", "Seite als Datei speichern"),
        ("This line continues on the next line.", "Diese Zeile geht in der nächsten weiter."),
        ("Café menu", "Café-Menü"),
        ("Checking for updates…", "Nach Updates suchen…"),
        ("Downloading update — {transfer}", "Update wird heruntergeladen — {transfer}"),
        ("About Firefox", "Über Firefox"),
        ("Restart to update Firefox", "Neu starten, um Firefox zu aktualisieren"),
        ("R", "N"),  # access keys: dropped later by model.data's filters
    ]  # the plural selector message and the semicolon plural string are skipped


def test_lua_locale_table_unescapes_and_joins_line_breaks_and_skips_comments():
    pairs = list(lua_locale_pairs(FIXTURES / "hedgewars-de.lua"))
    assert pairs[0] == ("...", "…")  # kept here; the corpus filters drop it (too few words)
    assert ("If you can get that crate fast enough, your beloved \"princess\" may go free.",
            "Wenn du diese Kiste schnell genug einsammelst, darfst du deine geliebte »Prinzessin« befreien.") in pairs
    assert ("As long you don't touch the ground, you can re-use the same rope as often as you like.",
            "So lange du den Boden nicht berührst, kannst du das selbe Seil wiederverwenden, so oft du willst.") \
        in pairs  # `|` line breaks joined
    assert ("What a strange cave!", "Was für eine seltsame Höhle!") in pairs
    assert not any("Commented" in english for english, _ in pairs) and len(pairs) == 5
