"""The uploads' archive rules, one helper for zips (datasets) and tarballs (model imports)."""

from __future__ import annotations

import pytest

from shoal.errors import InputError
from shoal.server.config import Settings
from shoal.server.security import check_archive_listing, member_parts


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "\\evil.png", "C:/evil.png",
                                  "a\\..\\evil.png", "a/evil\x00.png"])
def test_a_member_that_could_land_outside_the_folder_is_refused(name):
    with pytest.raises(InputError) as refused:
        member_parts(name, what="zip", remedy="zip the class folders with relative paths")
    assert str(refused.value) == (f"the zip has an unsafe path {name!r} (absolute, or leaving the archive with '..'); "
                                  "zip the class folders with relative paths")


def test_a_relative_member_gives_its_parts():
    assert member_parts("cats\\tabby/1.png", what="archive", remedy="") == ("cats", "tabby", "1.png")
    assert member_parts("a/./b.png", what="archive", remedy="") == ("a", "b.png")


def test_the_listing_limits_name_the_figure_and_the_limit():
    settings = Settings(max_zip_members=3, max_unzipped_bytes=2048)
    check_archive_listing("archive", 3, 2048, settings)  # at the limits: accepted
    with pytest.raises(InputError, match=r"^the archive holds 4 files, more than the limit of 3$"):
        check_archive_listing("archive", 4, 10, settings)
    with pytest.raises(InputError, match=r"^the zip would expand to 3 KB, more than the limit of 2 KB$"):
        check_archive_listing("zip", 1, 3072, settings)
