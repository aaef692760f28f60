"""The general-language sources of the Debian corpus, in priority order (an earlier source wins a duplicate).

Each source names its Debian packages, its domain and how its pairs are read. Domains with held-out splits
(`HELD_OUT_DOMAINS`) get data/<pair>/valid.<domain>.tsv and test.<domain>.tsv; the others only train.
The reserved sources (`RESERVED_PACKAGES`: the Wesnoth campaign "Under the Burning Suns" and apt's Translation-*
description indexes) are never read: they are kept for independent evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from model.corpus.blocks import (
    docbook_blocks, document_pairs, html_blocks, kde_handbook_pairs, mallard_blocks, same_name_pages,
)
from model.corpus.gettext_mo import mo_pairs
from model.corpus.json_i18n import json_pairs
from model.corpus.lua_locale import lua_locale_pairs
from model.corpus.mozilla import firefox_pairs
from model.corpus.qm import read_qm
from model.corpus.roff import man_page_pairs
from model.corpus.text import markup_to_text, split_paragraphs
from model.corpus_sources import DING_FILE, DING_PACKAGE, Package, ding_word_pairs
from model.data import MIN_WORDS

# Never read, never train, tune or evaluate on these (shared/notes/data-sources.md).
RESERVED_PACKAGES = ("wesnoth-1.16-utbs",)
RESERVED_TEXT_DOMAINS = ("wesnoth-utbs",)  # the same campaign's catalog, wherever it might ship
RESERVED_PATH_PARTS = ("Translation-",)  # apt's description indexes (DDTP)

DIALOGUE, GAMES, MANUALS, DESKTOP_HELP, DOCUMENTATION, UI, LEXICON = (
    "dialogue", "games", "manuals", "desktop-help", "documentation", "ui", "lexicon")
HELD_OUT_DOMAINS = (DIALOGUE, MANUALS, DESKTOP_HELP, DOCUMENTATION)
# train.backtranslated.tsv (model/backtranslate.py): real German, machine-made English. It trains en→de only.
BACKTRANSLATED = "backtranslated"
DOMAINS = (DIALOGUE, GAMES, MANUALS, DESKTOP_HELP, DOCUMENTATION, UI, LEXICON)

Reader = Callable[[dict[str, Package]], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Source:
    name: str
    domain: str
    packages: tuple[str, ...]
    read: Reader
    note: str  # how it is read, for the data card
    min_words: int = MIN_WORDS  # of the English side; 1 only for a dictionary's word entries


def _files(packages: dict[str, Package], pattern: str) -> list[Path]:
    found = sorted(p for package in packages.values() for p in package.root.glob(pattern))
    return [p for p in found if p.stem not in RESERVED_TEXT_DOMAINS and not any(r in str(p) for r in RESERVED_PATH_PARTS)]


def _mo(pattern: str, markup: bool = True, accelerators: bool = False) -> Reader:
    return lambda packages: split_paragraphs(mo_pairs(_files(packages, pattern), markup, accelerators))


def _qm(pattern: str) -> Reader:
    def read(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
        for path in _files(packages, pattern):
            yield from split_paragraphs((markup_to_text(en), markup_to_text(de)) for _, en, de in read_qm(path))
    return read


WESNOTH_CAMPAIGNS = ("did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe", "thot", "trow", "tsg",
                     "ttb")  # every campaign package of bookworm's Wesnoth 1.16 except the reserved utbs
MAN_ENGLISH = ("manpages", "manpages-dev", "coreutils", "util-linux", "util-linux-extra", "fdisk", "mount", "bsdutils",
               "systemd", "procps", "psmisc", "gzip", "bzip2", "xz-utils", "less", "kmod", "passwd", "login", "cron",
               "sudo", "iproute2", "debianutils", "sysvinit-utils", "file", "patch", "make", "gawk", "openssh-client",
               "sensible-utils", "libc-bin", "hostname", "iputils-ping", "net-tools", "lsof", "rsync", "zip", "unzip",
               "cpio", "time", "dosfstools", "bc", "dc", "groff-base", "eject", "dpkg-dev", "findutils", "grep", "sed",
               "tar", "bash", "man-db", "dpkg", "apt", "diffutils", "e2fsprogs", "wget", "nano", "gettext")


def _man(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    english = [packages[name].root / "usr/share/man" for name in MAN_ENGLISH]
    for german in ("manpages-de", "manpages-de-dev"):
        yield from split_paragraphs(man_page_pairs(english, packages[german].root / "usr/share/man/de"))


def _help_pages(en_package: str, de_package: str, en_dir: str, de_dir: str, pattern: str, reader,
                rename: Callable[[str], str] = lambda p: p) -> Reader:
    def read(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
        pages = same_name_pages(packages[en_package].root / en_dir, packages[de_package].root / de_dir, pattern, rename)
        yield from split_paragraphs(document_pairs(pages, reader))
    return read


def _chain(*readers: Reader) -> Reader:
    def read(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
        for reader in readers:
            yield from reader(packages)
    return read


# bookworm packages that ship a KDE handbook (doc/HTML/en and doc/HTML/de, index.cache.bz2) in both languages
KDE_HANDBOOKS = (
    "akregator", "ark", "artikulate", "blinken", "bomber", "bovo", "cantor", "dolphin", "dragonplayer", "filelight",
    "granatier", "gwenview", "juk", "kaddressbook", "kajongg", "kalarm", "kanagram", "kapman", "kate5-data",
    "katomic", "kbackup", "kblackbox", "kblocks", "kbounce", "kbreakout", "kbruch", "kcachegrind", "kcalc",
    "kcharselect", "kdeconnect", "kdenlive-data", "kdf", "kdiamond", "kfind", "kfourinline", "kget", "kgoldrunner",
    "kgpg", "khangman", "khelpcenter", "kig", "kigo", "killbots", "kinfocenter", "kiriki", "kiten", "kjumpingcube",
    "kleopatra", "klickety", "klines", "kmahjongg", "kmail", "kmenuedit", "kmines", "kmix", "kmplot",
    "knavalbattle", "knetwalk", "knights", "kolf", "kollision", "kolourpaint", "kompare", "konquest", "konsole",
    "korganizer", "kpat", "krdc", "kreversi", "krfb", "kshisen", "ksirk", "ksnakeduel", "kspaceduel", "ksquares",
    "ksudoku", "ksystemlog", "kteatime", "ktimer", "kturtle", "kubrick", "kwalletmanager", "kwordquiz", "kwrite",
    "lokalize", "okular", "partitionmanager", "picmi", "plasma-desktop-data", "rocs", "step", "sweeper",
    "systemsettings",
)


def _kde(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    for name in KDE_HANDBOOKS:
        html = packages[name].root / "usr/share/doc/HTML"
        for english in sorted(html.glob("en/*/index.cache.bz2")):
            german = html / "de" / english.relative_to(html / "en")
            if german.exists():
                yield from split_paragraphs(kde_handbook_pairs(english, german))


def _firefox(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    omni = sorted((packages["firefox-esr"].root / "usr/lib/firefox-esr").glob("**/omni.ja"))
    langpacks = sorted((packages["firefox-esr-l10n-de"].root / "usr/lib/firefox-esr").glob("**/langpack-de@*.xpi"))
    if omni and langpacks:
        yield from firefox_pairs(omni, langpacks[0])


def _mediawiki(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    root = packages["mediawiki"].root / "usr/share/mediawiki"
    directories = sorted({p.parent for p in root.glob("**/i18n/**/en.json") if (p.parent / "de.json").exists()}
                         | {p.parent for p in root.glob("**/i18n/en.json") if (p.parent / "de.json").exists()})
    yield from json_pairs(directories)


def _hedgewars(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    locale = packages["hedgewars-data"].root / "usr/share/games/hedgewars/Data/Locale/de.lua"
    yield from split_paragraphs(lua_locale_pairs(locale))


NAEV_COLOUR = re.compile(r"\x07(%[a-z]|.)")  # Naev's colour codes: BEL and a colour letter or a placeholder


def _naev(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    pairs = mo_pairs(_files(packages, "usr/share/naev/dat/gettext/de/LC_MESSAGES/*.mo"))
    yield from split_paragraphs((markup_to_text(NAEV_COLOUR.sub("", english)),
                                 markup_to_text(NAEV_COLOUR.sub("", german))) for english, german in pairs)


def _whole_sentences(reader: Reader) -> Reader:
    """Only entries that are whole sentences on the English side (a capital first and end punctuation last, quotes
    aside): a game that splits its dialogue lines into fragments for the screen translates the fragments out of step."""
    def read(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
        for english, german in reader(packages):
            starts, ends = english.lstrip("\"'„“«»(")[:1], english.rstrip("\"'»”)")
            if starts.isupper() and ends.endswith((".", "!", "?", "…")):
                yield english, german
    return read


def _ding_words(packages: dict[str, Package]) -> Iterator[tuple[str, str]]:
    return ding_word_pairs(packages[DING_PACKAGE].root / DING_FILE)


# Large applications' German UI catalogs (calibre's ship inside a zip archive and are not read).
APP_CATALOGUES = ("blender-data", "inkscape", "digikam-data", "gramps", "gimp-data", "kstars-data", "krita-l10n",
                  "kmymoney-common", "labplot-data")
WESNOTH_MO = "usr/share/games/wesnoth/1.16/locale/de/LC_MESSAGES/*.mo"
LOCALE_MO = "usr/share/locale/de/LC_MESSAGES/*.mo"

SOURCES: tuple[Source, ...] = (
    Source("wesnoth", DIALOGUE, ("wesnoth-1.16-data",) + tuple(f"wesnoth-1.16-{c}" for c in WESNOTH_CAMPAIGNS),
           _mo(WESNOTH_MO), ".mo catalogs (campaign dialogue, unit lore, help); Pango markup removed"),
    Source("cataclysm-dda", DIALOGUE, ("cataclysm-dda-data",), _mo(LOCALE_MO),
           ".mo catalog (item descriptions, NPC dialogue); colour tags removed, pairs with snippet tags "
           "(`<npcname>`) dropped as markup"),
    Source("freedroidrpg", DIALOGUE, ("freedroidrpg-data",), _mo(LOCALE_MO), ".mo catalogs (dialogues, items)"),
    Source("widelands", DIALOGUE, ("widelands-data",), _mo("usr/share/games/widelands/data/locale/de/LC_MESSAGES/*.mo"),
           ".mo catalogs (scenario stories, encyclopedia, UI)"),
    Source("warzone2100", DIALOGUE, ("warzone2100-data",), _mo(LOCALE_MO), ".mo catalog (campaign briefings, UI)"),
    Source("freeciv", GAMES, ("freeciv-data",), _mo(LOCALE_MO, accelerators=True), ".mo catalogs (help, nations, UI)"),
    Source("gcompris", GAMES, ("gcompris-qt-data",), _qm("usr/share/gcompris-qt/translations/gcompris_de.qm"),
           "Qt .qm catalog (children's activities), read by model/corpus/qm.py"),
    Source("gbrainy", GAMES, ("gbrainy",), _chain(
        _mo(LOCALE_MO, accelerators=True),
        _help_pages("gbrainy", "gbrainy", "usr/share/help/C", "usr/share/help/de", "*/*.page", mallard_blocks)),
           ".mo catalog (puzzles) and Mallard help pages"),
    Source("man-pages", MANUALS, ("manpages-de", "manpages-de-dev") + MAN_ENGLISH, _man,
           "roff pages of manpages-de(-dev) against the English page of the same name in the packages listed; "
           "paragraph blocks in order (model/corpus/roff.py); the German translators' section dropped"),
    Source("gnome-help", DESKTOP_HELP, ("gnome-user-docs",),
           _help_pages("gnome-user-docs", "gnome-user-docs", "usr/share/help/C", "usr/share/help/de", "*/*.page",
                       mallard_blocks), "Mallard pages C/ vs de/, block order; credits and code skipped"),
    Source("mate-user-guide", DESKTOP_HELP, ("mate-user-guide",),
           _help_pages("mate-user-guide", "mate-user-guide", "usr/share/help/C", "usr/share/help/de", "*/*.xml",
                       lambda path: docbook_blocks(path, {})), "DocBook C/ vs de/, block order"),
    Source("gimp-help", DESKTOP_HELP, ("gimp-help-en", "gimp-help-de"),
           _help_pages("gimp-help-en", "gimp-help-de", "usr/share/gimp/2.0/help/en", "usr/share/gimp/2.0/help/de",
                       "**/*.html", html_blocks), "HTML pages en/ vs de/ of the same name, block order"),
    Source("debian-reference", DOCUMENTATION, ("debian-reference-en", "debian-reference-de"),
           _help_pages("debian-reference-en", "debian-reference-de", "usr/share/debian-reference",
                       "usr/share/debian-reference", "*.en.html", html_blocks,
                       lambda p: p.replace(".en.html", ".de.html")), "HTML chapters *.en.html vs *.de.html, block order"),
    Source("debian-handbook", DOCUMENTATION, ("debian-handbook",),
           _help_pages("debian-handbook", "debian-handbook", "usr/share/doc/debian-handbook/html/en-US",
                       "usr/share/doc/debian-handbook/html/de-DE", "*.html", html_blocks), "HTML en-US/ vs de-DE/"),
    Source("maint-guide", DOCUMENTATION, ("maint-guide", "maint-guide-de"),
           _help_pages("maint-guide", "maint-guide-de", "usr/share/doc/maint-guide/html",
                       "usr/share/doc/maint-guide-de/html", "*.en.html", html_blocks,
                       lambda p: p.replace(".en.html", ".de.html")), "HTML *.en.html vs *.de.html"),
    Source("debian-faq", DOCUMENTATION, ("debian-faq", "debian-faq-de"),
           _help_pages("debian-faq", "debian-faq-de", "usr/share/doc/debian/FAQ", "usr/share/doc/debian/FAQ/de",
                       "*.en.html", html_blocks, lambda p: p.replace(".en.html", ".de.html")), "HTML *.en.html vs de/*.de.html"),
    Source("developers-reference", DOCUMENTATION, ("developers-reference", "developers-reference-de"),
           _help_pages("developers-reference", "developers-reference-de", "usr/share/developers-reference",
                       "usr/share/developers-reference/de", "*.html", html_blocks), "HTML X.html vs de/X.html"),
    Source("installation-guide", DOCUMENTATION, ("installation-guide-amd64",),
           _help_pages("installation-guide-amd64", "installation-guide-amd64",
                       "usr/share/doc/installation-guide-amd64/en", "usr/share/doc/installation-guide-amd64/de",
                       "*.html", html_blocks), "HTML en/ vs de/"),
    Source("harden-doc", DOCUMENTATION, ("harden-doc",),
           _help_pages("harden-doc", "harden-doc", "usr/share/doc/harden-doc/html/en-US",
                       "usr/share/doc/harden-doc/html/de-DE", "*.html", html_blocks), "HTML en-US/ vs de-DE/"),
    Source("mediawiki", UI, ("mediawiki",), _mediawiki, "JSON i18n catalogs en.json vs de.json by message key"),
    # Sources added later go last: dedupe lets an earlier source win, so existing splits keep their pairs and
    # nothing a model already trained on can become a held-out pair.
    Source("kde-handbooks", DESKTOP_HELP, KDE_HANDBOOKS, _kde,
           "rendered handbooks (index.cache.bz2, entities resolved by KDE's toolchain) en/ vs de/, pages paired by "
           "file name, block order; navigation, tables of contents and credits removed"),
    Source("app-catalogues", UI, APP_CATALOGUES, _mo(LOCALE_MO, accelerators=True),
           ".mo catalogs of large applications (UI strings); accelerators and markup removed"),
    Source("firefox", UI, ("firefox-esr", "firefox-esr-l10n-de"), _firefox,
           "Fluent messages (fluent.syntax) and .properties strings of omni.ja vs the German language pack, by "
           "file path and message id; selector (plural) messages skipped, variables kept as `{name}`"),
    # Everyday words the sentence sources lack ("fox", "lazy", "tonight" are on a few dozen German sides at most).
    Source("ding-words", LEXICON, (DING_PACKAGE,), _ding_words,
           "the Ding dictionary's word entries (one or two words a side; the original corpus takes its phrases of "
           "three or more), cleaned as the phrases are, one German per English word and one English per German "
           "word: of an entry's senses, the pair that occurs together in the most dictionary phrases wins",
           min_words=1),
    # Story and everyday text of more games; train only (GAMES), so the held-out dialogue splits stay as they were.
    Source("naev", GAMES, ("naev-data",), _naev,
           ".mo catalog (mission dialogue, bar and planet descriptions, UI); colour codes removed"),
    Source("freedink", GAMES, ("freedink-data",),
           _whole_sentences(_mo("usr/share/games/dink/dink/l10n/de/LC_MESSAGES/*.mo")),
           ".mo catalog (Dink Smallwood's dialogue); only entries that are whole English sentences (the game splits "
           "long lines into fragments, translated out of step)"),
    Source("hedgewars", GAMES, ("hedgewars-data",), _hedgewars,
           "Lua locale table Data/Locale/de.lua (mission and campaign dialogue, instructions), read by "
           "model/corpus/lua_locale.py; `|` line breaks joined"),
    Source("tuxpaint", GAMES, ("tuxpaint-data",), _mo(LOCALE_MO),
           ".mo catalog (tool tips and instructions for children)"),
)
