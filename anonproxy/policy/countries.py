"""Country codes: the ISO 3166-1 alpha-2 table, and what a code written elsewhere means (pure).

Profiles name countries by ISO 3166-1 alpha-2 code, as GeoIP databases and tor's ExitNodes do.
A code outside the table would be accepted and never match, so the profile is refused instead,
with the ISO code when the mistake is a common one ("UK" is "GB"; "EL", the EU's code for
Greece, is "GR"). Some GeoIP data carries such spellings too (the bundled database maps a few
networks to "UK"): a lookup reads them as the ISO code. Codes that name no country ("EU",
"AP", "??") match no rule.

The table is ISO 3166-1's 249 officially assigned codes (Debian's iso-codes package has the
same list; tests/test_countries.py compares them), plus XK (Kosovo), which the standard leaves
user-assigned and which GeoIP databases and tor use.
"""

from __future__ import annotations

_TABLE = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""  # as the standard prints it
CODES = frozenset(_TABLE.split()) | {"XK"}

# common spellings that are not the ISO code -> the ISO code
ALIASES = {"UK": "GB", "EL": "GR"}


def country_problem(code: str) -> str | None:
    """Why `code` (any case) is not a country code a profile may use, or None."""
    upper = code.upper()
    if upper in CODES:
        return None
    if upper in ALIASES:
        return f"'{code}' is not an ISO 3166-1 country code: write \"{ALIASES[upper]}\""
    return (f"'{code}' is not an ISO 3166-1 alpha-2 country code (two letters, as DE, GB, US)")


def iso_code(code: str | None) -> str | None:
    """The ISO code a GeoIP record's code stands for (upper case; aliases mapped)."""
    if code is None:
        return None
    upper = code.upper()
    return ALIASES.get(upper, upper)
