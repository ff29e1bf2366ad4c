"""Writes the shop exercise's two exports from products.csv (the truth table):

    python benchmarks/shop/make_exports.py

- ``shopify_products_export.csv``: a Shopify products CSV as the admin exports it (Handle, Title, Body (HTML) with
  a <style> block and entities, Vendor, Type, Tags, options, variants and extra image rows under their product;
  ``Product Category`` left empty: that is what the shop wants filled);
- ``merchant_center_feed.xml``: a Google Merchant Center RSS 2.0 feed (``g:`` fields, no google_product_category).

The 36 products and their true Google Product Taxonomy ids (2021-09-21) are invented for this exercise by the
project; brands are fictional and several are chosen to mislead (Tide, Echo, Harbour, Velvet).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

HERE = Path(__file__).parent
SIZES = {"Jeans": ["30", "32", "34"], "Running shoes": ["42", "43", "44"], "Socks": ["S/M", "L/XL"]}
COLUMNS = ["Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
           "Option1 Name", "Option1 Value", "Variant SKU", "Variant Grams", "Variant Inventory Policy",
           "Variant Price", "Variant Requires Shipping", "Image Src", "Image Position", "Image Alt Text",
           "Gift Card", "SEO Title", "Status"]


def main() -> None:
    products = list(csv.DictReader((HERE / "products.csv").open(encoding="utf-8")))
    rows = []
    for i, p in enumerate(products):
        body = (f"<style>.product-body{{font-size:14px}}</style><div class=\"product-body\"><p>"
                f"{html.escape(p['description'])}</p><ul><li>Ships in 2 &ndash; 3 days</li></ul></div>")
        sizes = SIZES.get(p["type"], ["Default Title"])
        option = "Size" if p["type"] in SIZES else "Title"
        image = f"https://cdn.shopify.example/files/{p['handle']}-1.jpg"
        for j, size in enumerate(sizes):
            first = j == 0
            rows.append({
                "Handle": p["handle"], "Title": p["title"] if first else "", "Body (HTML)": body if first else "",
                "Vendor": p["vendor"] if first else "", "Product Category": "", "Type": p["type"] if first else "",
                "Tags": p["tags"] if first else "", "Published": "TRUE" if first else "", "Option1 Name": option if first else "",
                "Option1 Value": size, "Variant SKU": f"SKU-{i:03d}-{j}", "Variant Grams": "500",
                "Variant Inventory Policy": "deny", "Variant Price": f"{10 + i}.00", "Variant Requires Shipping": "TRUE",
                "Image Src": image if first else "", "Image Position": "1" if first else "",
                "Image Alt Text": p["title"] if first else "", "Gift Card": "FALSE" if first else "",
                "SEO Title": "", "Status": "active" if first else ""})
        if i % 3 == 0:  # a second photo: an image-only row
            rows.append({c: "" for c in COLUMNS} | {"Handle": p["handle"], "Image Position": "2",
                                                    "Image Src": f"https://cdn.shopify.example/files/{p['handle']}-2.jpg"})
    with (HERE / "shopify_products_export.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    items = []
    for i, p in enumerate(products):
        fields = {"id": f"SKU-{i:03d}", "title": p["title"], "description": p["description"],
                  "link": f"https://shop.example/products/{p['handle']}",
                  "image_link": f"https://cdn.shopify.example/files/{p['handle']}-1.jpg",
                  "availability": "in_stock", "price": f"{10 + i}.00 EUR", "brand": p["vendor"],
                  "product_type": p["type"], "condition": "new"}
        items.append("<item>\n" + "\n".join(f"<g:{k}>{html.escape(v)}</g:{k}>" for k, v in fields.items()) + "\n</item>")
    (HERE / "merchant_center_feed.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">\n'
        "<channel>\n<title>Example shop</title>\n<link>https://shop.example</link>\n<description>All products</description>\n"
        + "\n".join(items) + "\n</channel>\n</rss>\n", encoding="utf-8")


if __name__ == "__main__":
    main()
