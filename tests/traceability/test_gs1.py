"""GS1 Digital Link: GTIN check digits, qualifier order, percent-encoding, malformed URIs."""
import pytest

from core.identifiers import gtin_check_digit, is_valid_gtin
from traceability import gs1
from tests.traceability.helpers import make_gtin13, make_gtin14


@pytest.mark.parametrize("gtin", ["6901234567892", "06901234567892", "96385074", "036000291452", "4006381333931"])
def test_known_gtins_have_valid_check_digits(gtin):
    assert is_valid_gtin(gtin)
    assert gs1.normalise_gtin(gtin) == gtin.zfill(14)


def test_check_digit_uses_weights_three_one_from_the_right():
    # 690123456789: 9*3+8*1+7*3+6*1+5*3+4*1+3*3+2*1+1*3+0*1+9*3+6*1 = 128 → (10 - 8) % 10 = 2
    assert gtin_check_digit("690123456789") == 2
    assert make_gtin13() == "6901234567892"


@pytest.mark.parametrize("bad", ["6901234567891", "06901234567893", "690123456789", "69012345678920000",
                                 "69O1234567892", "", "６９０１２３４５６７８９２"])
def test_bad_gtins_are_malformed(bad):
    with pytest.raises(gs1.MalformedDigitalLink):
        gs1.normalise_gtin(bad)


def test_build_path_puts_lot_then_serial_and_percent_encodes_values():
    path = gs1.build_path(make_gtin14(), "GZ/2026.01", "AB%C")
    assert path == f"/01/{make_gtin14()}/10/GZ%2F2026.01/21/AB%25C"
    link = gs1.parse_path(path)
    assert (link.gtin14, link.lot, link.serial, link.variant) == (make_gtin14(), "GZ/2026.01", "AB%C", None)


def test_parse_round_trips_every_cset82_character():
    lot = "!\"%&'()*+,-./:;<=>?_z"[:20]
    link = gs1.parse_path(gs1.build_path(make_gtin14(), lot, "Z9"))
    assert (link.gtin14, link.lot, link.serial) == (make_gtin14(), lot, "Z9")


def test_parse_accepts_shorter_gtins_and_pads_them():
    assert gs1.parse_path(f"/01/{make_gtin13()}/10/L1").gtin14 == make_gtin14()


def test_parse_accepts_variant_lot_serial_in_order():
    link = gs1.parse_path(f"/01/{make_gtin14()}/22/V1/10/L1/21/S1")
    assert (link.variant, link.lot, link.serial) == ("V1", "L1", "S1")


@pytest.mark.parametrize("suffix", [
    "/21/S1/10/L1",        # serial before lot
    "/10/L1/22/V1",        # variant after lot
    "/10/L1/10/L2",        # repeated qualifier
    "/10/L1/21",           # qualifier without value
    "/17/261231",          # not a key qualifier of GTIN here
    "/10/",                # empty lot
    "/10/" + "L" * 21,     # over 20 characters
    "/10/%E6%89%B9",       # Chinese is outside GS1 character set 82
    "/10/A%20B",           # so is a space
    "/10/%FF",             # not UTF-8 at all
])
def test_malformed_digital_links_are_rejected(suffix):
    with pytest.raises(gs1.MalformedDigitalLink):
        gs1.parse_path(f"/01/{make_gtin14()}{suffix}")


def test_slash_in_a_lot_stays_in_the_lot_when_encoded():
    assert gs1.parse_path(f"/01/{make_gtin14()}/10/A%2FB/21/S").lot == "A/B"
