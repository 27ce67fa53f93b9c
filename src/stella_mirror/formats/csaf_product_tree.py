"""CSAF 2.0 / 2.1 ``product_tree``: every product id mapped to what identifies it — read once, for both
Concelier (advisories) and Excititor (VEX claims).

What is read:

* ``branches`` (any depth, walked without recursion so a hostile tree cannot exhaust the stack): each
  product remembers the ``vendor``, ``product_name``/``product_family``, ``product_version`` and
  ``product_version_range`` branch names above it;
* ``full_product_names``;
* ``relationships`` (2.0 and 2.1): the product stands for its component (``product_reference``) on a
  platform (``relates_to_product_reference``), with the relationship ``category``;
* ``product_paths`` (2.1): the product stands for its ``beginning_product_reference``;
* ``product_groups``: group id → product ids;
* identification helpers: ``purl`` (2.0) and ``purls`` (2.1, all kept; the first is *the* purl), ``cpe``.

A product id defined twice keeps the first definition's values and takes from later ones only what the
first lacked. :meth:`ProductTree.identity` follows a product without purl or CPE to its component (a
relationship or path), a few hops at most, so callers get the product that carries identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stella_mirror.formats.reader import ReadContext, expect_list, expect_object, expect_str, require_str

MAX_REFERENCE_HOPS = 8
"""How many relationship/path references :meth:`ProductTree.identity` follows (cycles end there)."""


@dataclass
class Product:
    """What one product id stands for."""

    product_id: str
    name: str | None = None
    purls: tuple[str, ...] = ()
    cpe: str | None = None
    vendor: str | None = None
    product_name: str | None = None
    """The ``product_name`` (else ``product_family``) branch above the product."""
    version: str | None = None
    """The ``product_version`` branch above the product."""
    version_range: str | None = None
    """The ``product_version_range`` branch above the product, verbatim."""
    component: str | None = None
    """A relationship's ``product_reference`` or a product path's ``beginning_product_reference``."""
    platform: str | None = None
    """A relationship's ``relates_to_product_reference``."""
    relationship: str | None = None
    """A relationship's ``category`` (``default_component_of``, ``installed_on``…)."""

    @property
    def purl(self) -> str | None:
        """The product's purl (2.1: the first of ``purls``)."""
        return self.purls[0] if self.purls else None

    @property
    def identified(self) -> bool:
        """True when the product itself carries a purl or CPE."""
        return bool(self.purls or self.cpe)


@dataclass
class ProductTree:
    """The products and product groups of one CSAF document."""

    ctx: ReadContext
    products: dict[str, Product] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    # --- reading -----------------------------------------------------------------------------------

    def _helper(self, prod: dict[str, Any], where: str) -> tuple[tuple[str, ...], str | None]:
        raw = prod.get("product_identification_helper")
        if raw is None:
            return (), None
        hwhere = where + "/product_identification_helper"
        helper = expect_object(self.ctx, raw, hwhere)
        purls: list[str] = []
        purl = expect_str(self.ctx, helper.get("purl"), hwhere + "/purl")
        if purl and purl.strip():
            purls.append(purl.strip())
        for k, item in enumerate(expect_list(self.ctx, helper.get("purls"), hwhere + "/purls")):  # CSAF 2.1
            text = require_str(self.ctx, item, f"{hwhere}/purls/{k}").strip()
            if text not in purls:
                purls.append(text)
        cpe = expect_str(self.ctx, helper.get("cpe"), hwhere + "/cpe")
        return tuple(purls), (cpe.strip() or None) if cpe else None

    def _add(self, value: Any, where: str, branch: dict[str, str] | None = None) -> Product:
        """Register a ``full_product_name`` object (with the branch names above it, if any)."""
        prod = expect_object(self.ctx, value, where)
        pid = require_str(self.ctx, prod.get("product_id"), where + "/product_id")
        name = expect_str(self.ctx, prod.get("name"), where + "/name")
        purls, cpe = self._helper(prod, where)
        ctx = branch or {}
        new = Product(
            product_id=pid,
            name=name.strip() if name and name.strip() else None,
            purls=purls,
            cpe=cpe,
            vendor=ctx.get("vendor"),
            product_name=ctx.get("product_name") or ctx.get("product_family"),
            version=ctx.get("product_version"),
            version_range=ctx.get("product_version_range"),
        )
        old = self.products.get(pid)
        if old is None:
            self.products[pid] = new
            return new
        for attr in ("name", "cpe", "vendor", "product_name", "version", "version_range"):
            if getattr(old, attr) is None:
                setattr(old, attr, getattr(new, attr))
        old.purls = old.purls + tuple(p for p in new.purls if p not in old.purls)
        return old

    def _branches(self, value: Any, where: str) -> None:
        stack: list[tuple[Any, str, dict[str, str]]] = [(value, where, {})]
        while stack:
            branches, bwhere, above = stack.pop()
            for i, raw in enumerate(expect_list(self.ctx, branches, bwhere)):
                w = f"{bwhere}/{i}"
                branch = expect_object(self.ctx, raw, w)
                category = expect_str(self.ctx, branch.get("category"), w + "/category") or ""
                name = expect_str(self.ctx, branch.get("name"), w + "/name") or ""
                here = {**above, category: name} if category else above
                if branch.get("product") is not None:
                    prod = self._add(branch["product"], w + "/product", here)
                    if prod.name is None and name:
                        prod.name = name
                if branch.get("branches") is not None:
                    stack.append((branch["branches"], w + "/branches", here))

    @classmethod
    def load(cls, ctx: ReadContext, tree: Any) -> ProductTree:
        """Read a document's ``product_tree`` (absent: an empty tree)."""
        self = cls(ctx)
        if tree is None:
            return self
        t = expect_object(ctx, tree, "/product_tree")
        self._branches(t.get("branches"), "/product_tree/branches")
        for i, fpn in enumerate(expect_list(ctx, t.get("full_product_names"), "/product_tree/full_product_names")):
            self._add(fpn, f"/product_tree/full_product_names/{i}")
        for i, raw in enumerate(expect_list(ctx, t.get("relationships"), "/product_tree/relationships")):
            w = f"/product_tree/relationships/{i}"
            rel = expect_object(ctx, raw, w)
            prod = self._add(rel.get("full_product_name"), w + "/full_product_name")
            prod.component = prod.component or expect_str(ctx, rel.get("product_reference"), w + "/product_reference")
            prod.platform = prod.platform or expect_str(
                ctx, rel.get("relates_to_product_reference"), w + "/relates_to_product_reference"
            )
            prod.relationship = prod.relationship or expect_str(ctx, rel.get("category"), w + "/category")
        for i, raw in enumerate(expect_list(ctx, t.get("product_paths"), "/product_tree/product_paths")):  # 2.1
            w = f"/product_tree/product_paths/{i}"
            path = expect_object(ctx, raw, w)
            prod = self._add(path.get("full_product_name"), w + "/full_product_name")
            prod.component = prod.component or expect_str(
                ctx, path.get("beginning_product_reference"), w + "/beginning_product_reference"
            )
        for i, raw in enumerate(expect_list(ctx, t.get("product_groups"), "/product_tree/product_groups")):
            w = f"/product_tree/product_groups/{i}"
            group = expect_object(ctx, raw, w)
            gid = require_str(ctx, group.get("group_id"), w + "/group_id")
            ids = expect_list(ctx, group.get("product_ids"), w + "/product_ids", required=True)
            self.groups[gid] = [require_str(ctx, x, f"{w}/product_ids/{k}") for k, x in enumerate(ids)]
        return self

    # --- queries -----------------------------------------------------------------------------------

    def ids(self, value: Any, where: str) -> list[str]:
        """A list of product ids (``product_status`` lists, ``product_ids``), checked for type."""
        return [require_str(self.ctx, x, f"{where}/{k}") for k, x in enumerate(expect_list(self.ctx, value, where))]

    def expand(self, holder: dict[str, Any], where: str) -> list[str]:
        """``product_ids`` plus the members of ``group_ids`` of a flag, threat, remediation or note, in order."""
        out = dict.fromkeys(self.ids(holder.get("product_ids"), where + "/product_ids"))
        for gid in self.ids(holder.get("group_ids"), where + "/group_ids"):
            out.update(dict.fromkeys(self.groups.get(gid, ())))
        return list(out)

    def get(self, pid: str) -> Product:
        """The product of an id (a bare one when the tree does not define it)."""
        return self.products.get(pid) or Product(product_id=pid)

    def identity(self, pid: str) -> Product:
        """The product that identifies ``pid``: itself when it has a purl or CPE; else, following its
        relationship or product path (a few hops at most), the component it stands for."""
        current = self.get(pid)
        seen = {pid}
        for _ in range(MAX_REFERENCE_HOPS):
            ref = current.component
            if current.identified or ref is None or ref in seen or ref not in self.products:
                break
            seen.add(ref)
            current = self.products[ref]
        return current
