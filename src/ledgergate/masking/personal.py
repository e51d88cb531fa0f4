"""Personal data that only context reveals: names, street addresses, dates of birth.

No pattern tells "Jane Doe" from "Acme Corp" or a birthday from an invoice date.
So these detectors never fire on shape alone where shape is ambiguous:

- PERSON: a name after a cue that says a person follows ("account holder",
  "customer", "Mr.", "Dr.", "name:", ...). A name is 2-4 capitalised words (an
  initial may stand between them; a surname alone after an honorific), none of them
  a common business word, not followed by a company suffix (Inc, LLC, Bank, ...).
- ADDRESS: by shape wherever it stands, because the shape itself is the evidence:
  a house number, a street name, a street type from the USPS list (Street, Ave,
  Crossing, ...), then optional direction, unit, city, state and ZIP; also PO boxes
  and US military addresses (PSC/Unit + Box, ship names, with APO/FPO/DPO).
- DATE_OF_BIRTH: a date right after "born", "DOB", "date of birth", "birth date"
  or "birthday" (ISO, US and European numeric forms, month names). A timestamp
  with no such cue is never a date of birth.

In structured data the key names do the work (see detectors.py); the shape checks
here (`looks_like_person`, `looks_like_address`) decide only for the generic keys
`name` and `address`, which also name tools, files and network endpoints.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ledgergate.masking.names import ADDRESS, DATE_OF_BIRTH, PERSON

__all__ = ["find_addresses", "find_birth_dates", "find_persons", "looks_like_address", "looks_like_person"]

_Add = Callable[[tuple[int, int, int, str]], None]

# ----------------------------------------------------------------------------- names

_UP = "A-Z\u00c0-\u00d6\u00d8-\u00de"
_LO = "a-z\u00df-\u00f6\u00f8-\u00ff"
# Jane, O'Connor, McDonald, Garcia-Lee, JANE (all capitals), Zoë
_TOKEN = rf"(?:[{_UP}][{_UP}{_LO}'’]*[{_LO}]|[{_UP}][{_UP}'’]+)(?:-[{_UP}][{_UP}{_LO}'’]*[{_UP}{_LO}])*"
_INITIAL = rf"[{_UP}]\."
_SUFFIX = r"(?:,?[ ](?:Jr\.?|Sr\.?|II|III|IV|V|MD|DDS|DVM|PhD|Esq\.?|CPA))"
_NAME_END = rf"(?![{_UP}{_LO}0-9_@])"
# Two to four words, an initial allowed between; the name ends where the words end.
_FULL_NAME = rf"(?P<name>{_TOKEN}(?:[ ](?:{_INITIAL}|{_TOKEN})){{0,2}}[ ]{_TOKEN}{_NAME_END}{_SUFFIX}?)"
_SURNAME_OK = rf"(?P<sur>{_TOKEN}(?:[ ](?:{_INITIAL}|{_TOKEN})){{0,3}}{_NAME_END}{_SUFFIX}?)"

# Cue words ('~': an optional space, '_' or '-'). Found backwards from each capital letter
# that follows a space — names start there — by one pattern over the reversed lower-cased
# text, so text without such a capital costs one literal-led search, and each candidate
# costs one anchored match (a scan for every cue at every position would cost ~50 ns a character).
_CUE_WORDS = (
    "account~holder", "acct~holder", "card~holder", "policy~holder", "holder", "customer", "client",
    "beneficiary", "payee", "payer", "applicant", "co~applicant", "borrower", "co~borrower", "member",
    "patient", "employee", "insured", "signatory", "signer", "authorized user", "authorised user",
    "recipient", "sender", "contact", "guarantor", "trustee", "owner", "attn", "attention", "full~name",
    "legal~name", "first~name", "last~name", "customer~name", "client~name", "name", "dear",
)
_HONORIFICS = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame")


def _spellings(word: str) -> list[str]:
    out = [""]
    for part in word.split("~"):
        out = [o + sep + part for o in out for sep in (("", " ", "_", "-") if o else ("",))]
    return out


def _rev_alternation(words: tuple[str, ...]) -> str:
    spelled = sorted({sp[::-1] for w in words for sp in _spellings(w)}, key=lambda x: (-len(x), x))
    return "(?:" + "|".join(re.escape(sp) for sp in spelled) + ")"


# Read backwards from a capital: an honorific and a space (then a surname alone will do), or:
# [honorific]? separator [identifier]? ['s]? cue word — "Customer C-1001: Alice Nguyen".
_CUE_REV = re.compile(
    r"(?:[ ]+\.?(?P<hon>" + _rev_alternation(_HONORIFICS) + r")(?![a-z])"
    r"|(?:[ ]+\.?(?:rm|srm|sm|ssim|rd))?"
    r"(?:[ ]?[:=\-–][ ]?|[ ]+(?:si|saw|deman|dellac)[ ]+|[ ]+)"
    r"(?:[a-z0-9_#-]*[0-9][a-z0-9_#-]*[ ]+)?"
    r"(?P<lab>(?:s')?" + _rev_alternation(_CUE_WORDS) + r")(?![a-z]))"
)
# The name itself, matched forwards from the capital once a cue stands before it.
_SURNAME_AT = re.compile(_SURNAME_OK)
_FULL_NAME_AT = re.compile(_FULL_NAME)

# Capitalised words that start or fill business phrases after a cue ("Customer Service Team",
# "Account Holder Agreement"): any of them in a candidate means it is not a person's name.
# (Months that are also first names — April, May, June, August — are not on the list.)
_NOT_NAME = frozenset("""
account accounts acct action address admin administrator agreement alert all and annual api app application
approved auto automatic balance bank banking basic benefit benefits billing board branch business call card
care case cash center centre change charge checking claim class client closed code company compliance contact
corporate credit customer customers daily data date day dear debit december default department deposit desk
detail details digital direct division east email employee enterprise escrow experience external family fax
february fee file final finance financial first for form fraud friday from fund funds general global gold
group guest help high holder home hub id identity inbound info information insurance internal international
into invoice it january joint july last legal limit line list loan loans management manager march market
member members merchant message mobile monday money monthly mortgage name new no north not notice november
number october office officer online open operations order our owner page partner payment payments pending
personal phone platform plan platinum policy portal premier premium primary priority private product profile
program qualified rate record records reference region relations relationship report request retail review
risk saturday savings second security segment september service services settings since south standard
statement status success sunday support system team tax technical the this thursday ticket to today total
trade transfer trust tuesday type unit unknown update user users vip wallet wednesday west wire with your inc
llc ltd limited corp corporation co company plc gmbh ag llp lp holdings partners associates foundation capital
ventures industries enterprises solutions technologies systems sons
""".split())
_COMPANY_AFTER = re.compile(
    r"(?:,?[ ]+(?:Inc|LLC|L\.L\.C|Ltd|Limited|Corp|Corporation|Co|Company|Group|PLC|GmbH|AG|SA|NV|BV|LLP|LP"
    r"|Bank|Holdings|Partners|Associates|Foundation|Trust|Capital|Ventures|Industries|Enterprises|Solutions"
    r"|Technologies|Systems|Services|and[ ]Sons|&[ ]Co)\b)"
)


def _name_ok(name: str) -> bool:
    for word in name.replace(".", " ").replace(",", " ").split():
        if word.lower() in _NOT_NAME:
            return False
    return True


# Every name this module finds has a capital letter right after a space: text without one
# (most JSON) is done after one literal-led search.
_NAME_GATE = re.compile(f"[ ](?=[{_UP}])")


def find_persons(text: str, lowered: str, add: _Add, rank: int) -> None:
    """Names that stand right after a person cue (`lowered` is text.lower(), the same length)."""
    n = len(text)
    rev = ""
    done = -1
    for gate in _NAME_GATE.finditer(text):
        q = gate.end()  # the capital
        if q <= done:
            continue
        if not rev:
            rev = lowered[::-1]
        cue = _CUE_REV.match(rev, n - q)
        if cue is None:
            continue
        if cue.group("hon") is not None:
            m = _SURNAME_AT.match(text, q)
            group = "sur"
        else:
            m = _FULL_NAME_AT.match(text, q)
            group = "name"
        if m is None:
            continue
        s, e = m.span(group)
        if _name_ok(m.group(group)) and _COMPANY_AFTER.match(text, e) is None:
            add((s, e, rank, PERSON))
            done = e


_WHOLE_NAME = re.compile(rf"(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[ ]+)?{_FULL_NAME}[ ]*")
_LAST_FIRST = re.compile(rf"{_TOKEN},[ ]*{_TOKEN}(?:[ ]{_INITIAL})?[ ]*")


def looks_like_person(value: str) -> bool:
    """True for a value under a generic `name` key that reads as a person's name."""
    v = value.strip()
    if not 3 <= len(v) <= 80:
        return False
    if _WHOLE_NAME.fullmatch(v) is None and _LAST_FIRST.fullmatch(v) is None:
        return False
    return _name_ok(v) and _COMPANY_AFTER.search(v) is None


# ----------------------------------------------------------------------------- addresses

# USPS Publication 28 street suffixes (primary names and standard abbreviations).
_STREET_TYPES = """
Alley Aly Annex Anx Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs Bottom Btm
Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp Camp Cp Canyon Cyn Cape Cpe
Causeway Cswy Center Ctr Centre Centers Ctrs Circle Cir Circles Cirs Cliff Clf Cliffs Clfs Club Clb Common Cmn
Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts Cove Cv Coves Cvs Creek Crk Crescent Cres
Crest Crst Crossing Xing Crossroad Xrd Crossroads Xrds Curve Curv Dale Dl Dam Dm Divide Dv Drive Dr Drives Drs
Estate Est Estates Ests Expressway Expy Extension Ext Extensions Exts Fall Falls Fls Ferry Fry Field Fld Fields
Flds Flat Flt Flats Flts Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs Fork Frk Forks Frks Fort Ft
Freeway Fwy Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn Greens Grns Grove Grv Groves Grvs
Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills Hls Hollow Holw Inlet Inlt Island Is
Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll Knl Knolls Knls Lake Lk Lakes Lks Land
Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks Lcks Lodge Ldg Loop Mall Manor Mnr Manors Mnrs
Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn Motorway Mtwy Mount Mt Mountain Mtn Mountains Mtns
Neck Nck Orchard Orch Oval Overpass Opas Park Prk Parks Parkway Pkwy Parkways Pass Passage Psge Path Pike Pine
Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza Plz Point Pt Points Pts Port Prt Ports Prts Prairie Pr
Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds Rest Rst Ridge Rdg Ridges Rdgs River Riv Road Rd Roads Rds
Route Rte Row Rue Run Shoal Shl Shoals Shls Shore Shr Shores Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs
Square Sq Squares Sqs Station Sta Stravenue Stra Stream Strm Street St Streets Sts Summit Smt Terrace Ter Terr
Throughway Trwy Trace Trce Track Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke
Underpass Upas Union Un Unions Uns Valley Vly Valleys Vlys Via Viaduct Vdct View Vw Views Vws Village Vlg
Villages Vlgs Ville Vl Vista Vis Walk Walks Wall Way Ways Well Wl Wells Wls
""".split()
_TYPES = "|".join(sorted({*(_STREET_TYPES), *(t.upper() for t in _STREET_TYPES)}, key=lambda t: (-len(t), t)))
_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH "
    "OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP FM MH PW AA AE AP"
).split()
_STATE = "(?:" + "|".join(_STATES) + ")"
_WORD = r"(?:[A-Z][A-Za-z'’]*(?:-[A-Z][A-Za-z'’]*)?\.?|\d{1,3}(?:st|nd|rd|th|ST|ND|RD|TH))"
_DIR = (r"(?:North|South|East|West|Northeast|Northwest|Southeast|Southwest|NORTH|SOUTH|EAST|WEST"
        r"|N\.?E\.?|N\.?W\.?|S\.?E\.?|S\.?W\.?|[NSEW]\.?)")
_UNIT = (r"(?:,?[ ]+(?:Apt|APT|Apartment|Suite|SUITE|Ste|STE|Unit|UNIT|Fl|Floor|Rm|Room|Bldg|Building|Lot|Trlr|Dept)\.?"
         r"[ ]*#?[ ]*[A-Za-z0-9-]{1,8}|[ ]*#[ ]*[A-Za-z0-9-]{1,8})")
_SEP = r"(?:,[ ]*\n?[ ]*|[ ]*\n[ ]*|,?[ ]+)"
_CITY_ZIP = (rf"(?:{_SEP}(?:[A-Z][A-Za-z.'’-]*[ ]+){{0,3}}[A-Z][A-Za-z.'’-]*,?[ ]+{_STATE}\.?[ ]+"
             rf"\d{{5}}(?:-\d{{4}})?(?!\d))")
# A city with no state or ZIP is taken only where the phrase ends right after it.
_CITY_ONLY = r"(?:,[ ]*[A-Z][A-Za-z'’-]+(?:[ ][A-Z][A-Za-z'’-]+){0,2}(?=[ ]*(?:$|[\n.;:)\"'\]}|]|,[ ]+[a-z])))"
_STREET = (rf"(?<![\w.,/#-])\d{{1,6}}[A-Z]?(?:-\d{{1,4}})?[ ]+(?:{_DIR}[ ]+)?(?:{_WORD}[ ]+){{1,4}}?"
           rf"(?:{_TYPES})(?![A-Za-z0-9])\.?(?:[ ]+{_DIR}(?![A-Za-z]))?{_UNIT}?(?:{_CITY_ZIP}|{_CITY_ONLY})?")
_MILITARY = (r"(?<![A-Za-z])(?:(?:PSC|Unit|UNIT|CMR)[ ]+\d{3,5},?[ ]+Box[ ]+\d{1,5}"
             r"|(?:USS|USNS|USNV|USCGC)[ ]+[A-Z][A-Za-z'’-]+)"
             rf"{_SEP}(?:APO|FPO|DPO)[ ]+A[AEP][ ]+\d{{5}}(?:-\d{{4}})?(?!\d)")
_PO_BOX = rf"(?<![A-Za-z])(?:P\.?[ ]?O\.?|Post[ ]Office)[ ]+Box[ ]+\d{{1,6}}{_CITY_ZIP}?"
_ADDRESS_RE = re.compile(f"{_STREET}|{_MILITARY}|{_PO_BOX}")
_STREET_AT = re.compile(_STREET)
_OTHER_RE = re.compile(f"{_MILITARY}|{_PO_BOX}")
# Literal-led gates: a space after a digit, then a capital or an ordinal (the street name); a PO
# box or military unit; a ship. The street pattern is then tried only where a house number starts.
_STREET_GATE = re.compile(r"[ ](?<=\d[ ])(?:[A-Z]|\d{1,3}(?:st|nd|rd|th|ST|ND|RD|TH)(?![A-Za-z0-9]))")
_OTHER_GATE = re.compile(r"Box[ ]|US[SN]|USCGC")
_HOUSE_NUMBER_CHARS = frozenset("0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def find_addresses(text: str, add: _Add, rank: int) -> None:
    """Street, PO box and military addresses by their shape."""
    done = -1
    for gate in _STREET_GATE.finditer(text):
        start = gate.start()  # the space after the house number: walk back to where it starts
        while start > 0 and gate.start() - start < 12 and text[start - 1] in _HOUSE_NUMBER_CHARS:
            start -= 1
        if start <= done:
            continue
        while start < gate.start() and not text[start].isdigit():
            start += 1
        m = _STREET_AT.match(text, start)
        if m is not None:
            add((m.start(), m.end(), rank, ADDRESS))
            done = m.end()
    if _OTHER_GATE.search(text) is not None:
        for m in _OTHER_RE.finditer(text):
            add((m.start(), m.end(), rank, ADDRESS))


_NUMBER_WORD = re.compile(r"\d+[A-Za-z]?[ ]+[A-Za-z]{2,}")


def looks_like_address(value: str) -> bool:
    """True for a value under a generic `address` key that is a postal address, not a host or wallet."""
    v = value.strip()
    if " " not in v or "@" in v or "://" in v or "[" in v:
        return False
    return _NUMBER_WORD.search(v) is not None or _ADDRESS_RE.search(v) is not None


# ----------------------------------------------------------------------------- dates of birth

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DS = r"[-/. _~*]"  # the separators that make a number on their own (detectors.py `_GS`): a cue is needed anyway
_DATE = (rf"(?:\d{{4}}{_DS}\d{{1,2}}{_DS}\d{{1,2}}(?:T\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?"
         rf"|\d{{1,2}}{_DS}\d{{1,2}}{_DS}\d{{2,4}}"
         rf"|(?i:{_MONTH})\.?[ ]+\d{{1,2}}(?:st|nd|rd|th)?,?[ ]+\d{{4}}"
         rf"|\d{{1,2}}(?:st|nd|rd|th)?[ ]+(?:of[ ]+)?(?i:{_MONTH})\.?,?[ ]+\d{{4}}"
         rf"|(?:19|20)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))(?![\d])")
_DOB_CUE = re.compile(
    r"(?<![a-z])(?:born(?:[ ]+on)?|d\.?o\.?b\.?|date[ _-]?of[ _-]?birth|birth[ _-]?date|birthdate|birthday"
    r"|birth)"
)
_AFTER_DOB = re.compile(
    rf"(?:[ ]*[:=\-–][ ]*|[ ]+(?i:is|was|of|on)[ ]+|[ ]*\([^)]{{0,12}}\)[ ]*[:=]?[ ]*|[ ]+)(?P<date>{_DATE})"
)


def find_birth_dates(text: str, lowered: str, add: _Add, rank: int) -> None:
    """Dates that stand right after a birth cue (`lowered` is text.lower(), the same length)."""
    if "birth" not in lowered and "born" not in lowered and "dob" not in lowered and "d.o.b" not in lowered:
        return
    for cue in _DOB_CUE.finditer(lowered):
        m = _AFTER_DOB.match(text, cue.end())
        if m is not None:
            add((m.start("date"), m.end("date"), rank, DATE_OF_BIRTH))
