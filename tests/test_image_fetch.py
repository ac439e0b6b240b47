"""Where an API request's images may come from (webui.core.image_fetch): data: URLs always; http(s) only from
the hosts `serve --allow-image-host` names, on public addresses checked after DNS resolution and on every
redirect; file: and other schemes never. The network is replaced at its seams (resolver, connector) as in the
fetch_page tool's tests: "public.test" resolves to a public address that the connector maps to a loopback
server, while the vetting itself is the real one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import (
    PIXELS,
    ImageSite,
    bomb_png,
    data_url,
    image_site,
    jpeg_bytes,
    pixels_of,
    png_bytes,
)
from webui.core.image_fetch import (
    IMAGE_HOST_OPTION,
    ImageFetcher,
    ImageSources,
    ImageUrlRefused,
    host_matches,
    normalise_hosts,
)
from webui.core.media import ImageError

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
def site() -> Iterator[ImageSite]:
    with image_site() as served:
        served.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, png_bytes())
        served.routes["/secret.png"] = (200, {"Content-Type": "image/png"}, png_bytes())
        yield served


def fetcher(site: ImageSite, hosts: list[str], **kwargs: Any) -> ImageFetcher:
    """A fetcher whose DNS maps public.test (and other.test) to a public address and sneaky.test to loopback,
    and whose network reaches the local server for the public address only."""

    def resolver(host: str, _: int) -> list[str]:
        return {
            "public.test": [PUBLIC_IP],
            "cdn.public.test": [PUBLIC_IP],
            "other.test": [PUBLIC_IP],
            "sneaky.test": ["127.0.0.1"],
            "mixed.test": [PUBLIC_IP, "10.0.0.5"],
            "meta.test": ["169.254.169.254"],
            "mapped.test": ["::ffff:127.0.0.1"],
        }.get(host, [])

    def connector(address: tuple[str, int], timeout: float) -> socket.socket:
        host = "127.0.0.1" if address[0] == PUBLIC_IP else address[0]
        return socket.create_connection((host, site.port), timeout=timeout)

    return ImageFetcher(hosts, resolver=resolver, connector=connector, **kwargs)


# -- without the option: data: URLs only ---------------------------------------------------------------------


def test_data_urls_are_decoded_to_the_pixels_sent() -> None:
    image = ImageSources().read(data_url(png_bytes()))
    assert pixels_of(image.data) == PIXELS and (image.width, image.height) == (3, 2)
    jpeg = ImageSources().read(data_url(jpeg_bytes(), "image/jpeg"))
    assert jpeg.data.startswith(b"\x89PNG")  # re-encoded: no loader ever parses the sender's bytes


def test_an_http_url_is_refused_without_the_option_and_never_contacted(site: ImageSite) -> None:
    url = f"http://127.0.0.1:{site.port}/secret.png"
    with pytest.raises(ImageUrlRefused) as refused:
        ImageSources().read(url)
    message = str(refused.value)
    assert IMAGE_HOST_OPTION in message and "data: URL" in message and "not fetched" in message
    assert site.hits == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "file: URLs are never read"),
        ("FILE:///etc/passwd", "file: URLs are never read"),
        ("/etc/passwd", "must be a base64 data: URL"),
        ("ftp://public.test/cat.png", "must be a base64 data: URL"),
        ("gopher://public.test/", "must be a base64 data: URL"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png,notbase64", "base64 data: URL"),
        ("data:image/png;base64,@@@", "not valid base64"),
    ],
)
def test_other_sources_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        ImageSources().read(url)


def test_bad_images_are_refused_with_the_reason() -> None:
    with pytest.raises(ImageError, match="not an image this server reads"):
        ImageSources().read(data_url(b"GIF89a but not really"))
    with pytest.raises(ImageError, match=r"too large to decode safely \(Image size \(900000000 pixels\)"):
        ImageSources().read(data_url(bomb_png()))


# -- with the option: the allowed hosts, public addresses only -----------------------------------------------


def test_an_allowed_public_host_is_fetched(site: ImageSite) -> None:
    sources = ImageSources(fetcher(site, ["public.test"]))
    image = sources.read(f"http://public.test:{site.port}/cat.png")
    assert pixels_of(image.data) == PIXELS
    assert site.hits == ["/cat.png"]


def test_a_host_outside_the_list_is_refused_before_any_lookup(site: ImageSite) -> None:
    sources = ImageSources(fetcher(site, ["public.test"]))
    with pytest.raises(ImageUrlRefused, match="only from the hosts this server allows"):
        sources.read(f"http://other.test:{site.port}/cat.png")
    assert site.hits == []


@pytest.mark.parametrize(
    "host",
    [
        "sneaky.test",  # a name that resolves to loopback
        "mixed.test",  # one public and one private address
        "meta.test",  # the cloud metadata service
        "mapped.test",  # an IPv4-mapped IPv6 loopback
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "169.254.169.254",
        "224.0.0.1",
    ],
)
def test_private_addresses_are_refused_even_when_allowed(site: ImageSite, host: str) -> None:
    sources = ImageSources(fetcher(site, ["*"]))
    with pytest.raises(ImageUrlRefused, match="refused"):
        sources.read(f"http://{host}:{site.port}/secret.png")
    assert site.hits == []


def test_the_real_resolver_refuses_localhost_by_name(site: ImageSite) -> None:
    sources = ImageSources.for_hosts(["localhost"])
    with pytest.raises(ImageUrlRefused, match="refused"):
        sources.read(f"http://localhost:{site.port}/secret.png")
    assert site.hits == []


def test_redirects_are_checked_again(site: ImageSite) -> None:
    site.routes["/to-loopback"] = (302, {"Location": f"http://127.0.0.1:{site.port}/secret.png"}, b"")
    site.routes["/to-sneaky"] = (301, {"Location": f"http://sneaky.test:{site.port}/secret.png"}, b"")
    site.routes["/to-other"] = (307, {"Location": f"http://other.test:{site.port}/secret.png"}, b"")
    site.routes["/to-file"] = (302, {"Location": "file:///etc/passwd"}, b"")
    site.routes["/moved"] = (302, {"Location": "/cat.png"}, b"")
    sources = ImageSources(fetcher(site, ["public.test"]))
    for path in ("/to-loopback", "/to-sneaky", "/to-other", "/to-file"):
        with pytest.raises(ImageUrlRefused):
            sources.read(f"http://public.test:{site.port}{path}")
    assert "/secret.png" not in site.hits  # the redirects were read, their targets never
    assert pixels_of(sources.read(f"http://public.test:{site.port}/moved").data) == PIXELS


def test_downloads_are_capped_and_must_be_images(site: ImageSite) -> None:
    big = png_bytes([(1, 2, 3)] * 400 * 400, (400, 400))
    site.routes["/big.png"] = (200, {"Content-Type": "image/png"}, big)
    site.routes["/page"] = (200, {"Content-Type": "text/html"}, b"<html>not an image</html>")
    site.routes["/fake.png"] = (200, {"Content-Type": "image/png"}, b"not really a png")
    site.routes["/gone.png"] = (404, {"Content-Type": "text/plain"}, b"")
    sources = ImageSources(fetcher(site, ["public.test"], max_bytes=len(big) - 1))
    url = f"http://public.test:{site.port}"
    with pytest.raises(ImageError, match=r"the limit is|larger than"):
        sources.read(f"{url}/big.png")
    with pytest.raises(ImageError, match="is not an image"):
        sources.read(f"{url}/page")
    with pytest.raises(ImageError, match="not an image this server reads"):
        sources.read(f"{url}/fake.png")
    with pytest.raises(ImageError, match="HTTP 404"):
        sources.read(f"{url}/gone.png")


def test_a_slow_server_is_given_up_on(site: ImageSite) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers

    def silent(address: tuple[str, int], timeout: float) -> socket.socket:
        return socket.create_connection(listener.getsockname(), timeout=timeout)

    slow = ImageFetcher(
        ["public.test"], resolver=lambda host, port: [PUBLIC_IP], connector=silent, time_limit=0.5
    )
    try:
        with pytest.raises(ImageError, match="not fetched"):
            slow.fetch("http://public.test/cat.png")
    finally:
        listener.close()


def test_host_patterns() -> None:
    assert normalise_hosts(["Images.Example.com.", "a.test,b.test", " ", "a.test"]) == (
        "images.example.com",
        "a.test",
        "b.test",
    )
    for bad in ("http://example.com", "example.com/x", "example.com:8080", "user@example.com"):
        with pytest.raises(ValueError, match="not a host name"):
            normalise_hosts([bad])
    assert host_matches("cdn.example.com", ["*.example.com"])
    assert host_matches("example.com", ["*.example.com"])
    assert not host_matches("evilexample.com", ["*.example.com"])
    assert not host_matches("example.com.evil.test", ["example.com"])
    assert host_matches("anything.test", ["*"])


def test_serve_takes_the_allowed_hosts_and_refuses_urls_as_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    from webui.cli import CliError, build_parser, config_from_args

    def config(*flags: str) -> tuple[str, ...]:
        return config_from_args(build_parser().parse_args(["serve", *flags])).image_hosts

    assert config() == ()  # the default: no image URLs at all
    assert config("--allow-image-host", "Images.Example.com", "--allow-image-host", "*.cdn.test") == (
        "images.example.com",
        "*.cdn.test",
    )
    with pytest.raises(CliError, match="--allow-image-host"):
        config("--allow-image-host", "https://images.example.com/")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    assert "--allow-image-host HOST" in capsys.readouterr().out
