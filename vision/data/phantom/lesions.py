"""Phantom lesions whose labels are visible.

The body part follows from where a lesion is (the region map of the anatomy, or a lymph
node station); its type and attributes from how it looks (cyst: round, homogeneous, near
water; calcified: very bright; cavitary: dark centre; spiculated: thin spikes; lobular:
bumpy outline; hypo-/hyperattenuating against the organ; heterogeneous: mottled;
enhancing: bright rim; ground glass: hazy, soft-edged; sclerotic / lytic: bright / dark
in bone; nodule < 30 mm <= mass; subcentimeter < 10 mm; tiny < 6 mm; large >= 45 mm).
Labels here are the specific names; the writer expands them through the ontology.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from vision.data.deeplesion import DataError
from vision.data.phantom.anatomy import HU, LUNG_REGIONS, Grid, Patient, Region, body_half_axes

LOBE_LABELS = {
    Region.RIGHT_UPPER_LOBE: "right upper lobe",
    Region.RIGHT_MIDDLE_LOBE: "right mid lung",
    Region.RIGHT_LOWER_LOBE: "right lower lobe",
    Region.LEFT_UPPER_LOBE: "left upper lung",
    Region.LEFT_LOWER_LOBE: "left lower lobe",
}
ORGAN_HU = {
    **{r: HU["lung"] for r in LUNG_REGIONS},
    Region.LIVER: HU["liver"],
    Region.SPLEEN: HU["spleen"],
    Region.RIGHT_KIDNEY: HU["kidney_cortex"],
    Region.LEFT_KIDNEY: HU["kidney_cortex"],
    Region.PANCREATIC_HEAD: HU["pancreas"],
    Region.PANCREATIC_BODY: HU["pancreas"],
    Region.PANCREATIC_TAIL: HU["pancreas"],
}


@dataclass(frozen=True)
class Look:
    """How a lesion is painted."""

    value: float  # HU inside
    edge_mm: float = 1.0  # width of the soft edge
    shape: str = "round"  # round | lobular | spiculated
    texture: float = 0.0  # HU amplitude of a mottled pattern (heterogeneous)
    rim: float = 0.0  # HU added in the outer ring (enhancing rim)
    core: float | None = None  # HU of the centre (cavity, necrosis)
    core_fraction: float = 0.45
    calcification: float | None = None  # HU of a central calcified focus


@dataclass(frozen=True)
class PhantomLesion:
    """A lesion in patient millimetres, with the specific labels it shows."""

    x: float
    y: float
    z: float  # world z (mm)
    radius_x: float  # semi-axes (mm) before rotation
    radius_y: float
    radius_z: float
    angle: float
    look: Look
    labels: tuple[str, ...]
    site: str
    kind: str
    coarse_type: (
        int  # DeepLesion coarse type: 1 bone 2 abdomen 3 mediastinum 4 liver 5 lung 6 kidney 7 soft tissue 8 pelvis
    )
    window: tuple[float, float]
    shape_seed: int

    @property
    def diameter_mm(self) -> float:
        return 2 * max(self.radius_x, self.radius_y)


# --------------------------------------------------------------------------- kinds


def _size_labels(diameter: float) -> list[str]:
    labels = []
    if diameter < 10:
        labels.append("subcentimeter")
    if diameter < 6:
        labels.append("tiny")
    if diameter >= 45:
        labels.append("large")
    return labels


def _solid_type(diameter: float) -> str:
    return "mass" if diameter >= 30 else "nodule"


def _diameter(rng: np.random.Generator, lo: float, hi: float, typical: float) -> float:
    """Long-tailed diameters (log-normal around ``typical``), clipped to [lo, hi]."""
    return float(np.clip(rng.lognormal(math.log(typical), 0.45), lo, hi))


KindResult = tuple[list[str], Look, float, float]  # labels, look, diameter, aspect
Kind = Callable[[np.random.Generator, float], KindResult]  # (rng, organ HU) -> ...


def _lung_nodule(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 3.5, 29, 11)
    labels, look = ["lung nodule"], Look(value=40.0, edge_mm=0.7)
    u = rng.random()
    if u < 0.22 and d >= 8:
        labels.append("spiculated")
        look = replace(look, shape="spiculated")
    elif u < 0.34:
        labels.append("calcified")
        look = replace(look, value=float(rng.uniform(650, 900)))
    elif u < 0.46 and d >= 12:
        labels.append("cavitary")
        look = replace(look, core=-900.0, core_fraction=0.5)
    return labels + _size_labels(d), look, d, float(rng.uniform(0.85, 1.0))


def _lung_mass(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 30, 75, 40)
    labels, look = ["lung mass"], Look(value=40.0, edge_mm=1.0, texture=8.0)
    u = rng.random()
    if u < 0.35:
        labels.append("lobular")
        look = replace(look, shape="lobular")
    elif u < 0.6:
        labels.append("spiculated")
        look = replace(look, shape="spiculated")
    return labels + _size_labels(d), look, d, float(rng.uniform(0.75, 1.0))


def _ground_glass(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 10, 40, 20)
    return ["ground-glass opacity"], Look(value=-560.0, edge_mm=4.0, texture=40.0), d, float(rng.uniform(0.7, 1.0))


def _lymph_node(rng: np.random.Generator, organ: float, allow_calcified: bool = False) -> KindResult:
    d = _diameter(rng, 14, 60, 22)
    labels, look = ["lymphadenopathy"], Look(value=45.0, edge_mm=1.0)
    u = rng.random()
    if u < 0.15 and d >= 18:
        labels.append("necrosis")
        look = replace(look, core=0.0, core_fraction=0.55)
    elif u < 0.27 and allow_calcified:
        labels.append("calcified")
        look = replace(look, calcification=float(rng.uniform(600, 900)))
    return labels + _size_labels(d), look, d, float(rng.uniform(0.55, 0.8))


def _thoracic_node(rng: np.random.Generator, organ: float) -> KindResult:
    return _lymph_node(rng, organ, allow_calcified=True)


def _cyst(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 4, 60, 14)
    return (
        ["cyst", "hypoattenuation"] + _size_labels(d),
        Look(value=float(rng.uniform(0, 12)), edge_mm=0.6),
        d,
        float(rng.uniform(0.88, 1.0)),
    )


def _hypo_lesion(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 6, 75, 22)
    look = Look(value=organ - float(rng.uniform(50, 70)), edge_mm=1.6, texture=6.0)
    return [_solid_type(d), "hypoattenuation"] + _size_labels(d), look, d, float(rng.uniform(0.75, 1.0))


def _hyper_lesion(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 6, 40, 15)
    look = Look(value=organ + float(rng.uniform(70, 100)), edge_mm=1.2)
    return [_solid_type(d), "hyperattenuation"] + _size_labels(d), look, d, float(rng.uniform(0.8, 1.0))


def _rim_enhancing(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 15, 65, 30)
    look = Look(value=organ - 60.0, edge_mm=1.2, rim=170.0)
    return [_solid_type(d), "enhancing", "hypoattenuation"] + _size_labels(d), look, d, float(rng.uniform(0.8, 1.0))


def _heterogeneous_mass(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 32, 80, 50)
    look = Look(value=organ - 35.0, edge_mm=1.5, texture=70.0, shape="lobular")
    return ["mass", "heterogeneous", "lobular"] + _size_labels(d), look, d, float(rng.uniform(0.75, 1.0))


def _renal_solid(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 12, 60, 28)
    look = Look(value=80.0, edge_mm=1.2, texture=65.0)
    return [_solid_type(d), "heterogeneous"] + _size_labels(d), look, d, float(rng.uniform(0.8, 1.0))


def _adrenal_nodule(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 10, 50, 20)
    return [_solid_type(d)] + _size_labels(d), Look(value=25.0, edge_mm=1.0), d, float(rng.uniform(0.75, 0.95))


def _sclerotic(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 6, 22, 11)
    return (
        ["sclerotic"] + _size_labels(d),
        Look(value=float(rng.uniform(950, 1300)), edge_mm=1.0),
        d,
        float(rng.uniform(0.8, 1.0)),
    )


def _lytic(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 8, 24, 13)
    return ["lytic"] + _size_labels(d), Look(value=30.0, edge_mm=1.0), d, float(rng.uniform(0.8, 1.0))


def _soft_nodule(rng: np.random.Generator, organ: float) -> KindResult:
    d = _diameter(rng, 8, 35, 15)
    return [_solid_type(d)] + _size_labels(d), Look(value=35.0, edge_mm=1.0), d, float(rng.uniform(0.7, 1.0))


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class Site:
    """Where lesions occur: organ regions (labels from the region map) or a node station."""

    name: str
    weight: float
    z_range: tuple[float, float]  # anatomical z
    kinds: tuple[tuple[Kind, float], ...]
    coarse_type: int
    window: tuple[float, float]
    regions: tuple[Region, ...] = ()
    labels: tuple[str, ...] = ()  # body-part labels of a station
    station: Callable[[Patient, float, int], tuple[float, float]] | None = None  # (patient, z, side) -> x, y


def _cavity(p: Patient, z: float) -> tuple[float, float, float]:
    ax, ay = body_half_axes(p, z)
    cax, cay = ax - p.fat_mm - 12, ay - p.fat_mm - 12
    return cax, cay, cay * 0.62


def _st_superior_mediastinum(p: Patient, z: float, side: int) -> tuple[float, float]:
    cax, cay, _ = _cavity(p, z)
    return side * 9.0, -cay * 0.3


def _st_subcarinal(p: Patient, z: float, side: int) -> tuple[float, float]:
    cax, cay, _ = _cavity(p, z)
    return 0.0, cay * 0.15


def _st_hilum(p: Patient, z: float, side: int) -> tuple[float, float]:
    cax, cay, _ = _cavity(p, z)
    return side * cax * 0.27, cay * 0.02


def _st_axilla(p: Patient, z: float, side: int) -> tuple[float, float]:
    ax, ay = body_half_axes(p, z)
    return side * (ax - p.fat_mm * 0.6 - 6), -ay * 0.25


def _st_paraaortic(p: Patient, z: float, side: int) -> tuple[float, float]:
    _, _, spine_y = _cavity(p, z)
    return 14.0 + side * 24.0, spine_y - 26


def _st_mesentery(p: Patient, z: float, side: int) -> tuple[float, float]:
    cax, cay, _ = _cavity(p, z)
    return side * cax * 0.15, -cay * 0.35


def _st_iliac(p: Patient, z: float, side: int) -> tuple[float, float]:
    _, _, spine_y = _cavity(p, z)
    spread = 14 + 0.35 * (z - 435)
    return side * (spread + 22), spine_y - 22 - 0.3 * (z - 435)


def _st_groin(p: Patient, z: float, side: int) -> tuple[float, float]:
    cax, cay, _ = _cavity(p, z)
    return side * cax * 0.55, -cay * 0.85


ABD = (-175.0, 275.0)
LUNG = (-1500.0, 500.0)
MED = (-160.0, 240.0)
BONE = (-450.0, 1050.0)
_ORGAN_KINDS = (
    (_cyst, 0.35),
    (_hypo_lesion, 0.35),
    (_hyper_lesion, 0.12),
    (_rim_enhancing, 0.1),
    (_heterogeneous_mass, 0.08),
)

SITES: tuple[Site, ...] = (
    Site(
        "lung",
        0.27,
        (15, 245),
        ((_lung_nodule, 0.62), (_lung_mass, 0.2), (_ground_glass, 0.18)),
        5,
        LUNG,
        regions=LUNG_REGIONS,
    ),
    Site(
        "superior mediastinum node",
        0.04,
        (35, 85),
        ((_thoracic_node, 1.0),),
        3,
        MED,
        labels=("superior mediastinum lymph node",),
        station=_st_superior_mediastinum,
    ),
    Site(
        "subcarinal node",
        0.035,
        (102, 122),
        ((_thoracic_node, 1.0),),
        3,
        MED,
        labels=("subcarinal lymph node",),
        station=_st_subcarinal,
    ),
    Site(
        "right hilar node",
        0.03,
        (95, 130),
        ((_thoracic_node, 1.0),),
        3,
        MED,
        labels=("right hilum lymph node",),
        station=lambda p, z, s: _st_hilum(p, z, -1),
    ),
    Site(
        "left hilar node",
        0.025,
        (95, 130),
        ((_thoracic_node, 1.0),),
        3,
        MED,
        labels=("left hilum lymph node",),
        station=lambda p, z, s: _st_hilum(p, z, 1),
    ),
    Site(
        "axillary node",
        0.03,
        (15, 80),
        ((_lymph_node, 1.0),),
        7,
        MED,
        labels=("axilla lymph node",),
        station=_st_axilla,
    ),
    Site("liver", 0.14, (200, 330), _ORGAN_KINDS, 4, ABD, regions=(Region.LIVER,)),
    Site("spleen", 0.02, (215, 280), ((_cyst, 0.5), (_hypo_lesion, 0.5)), 2, ABD, regions=(Region.SPLEEN,)),
    Site(
        "kidney",
        0.06,
        (262, 365),
        ((_cyst, 0.7), (_renal_solid, 0.3)),
        6,
        ABD,
        regions=(Region.RIGHT_KIDNEY, Region.LEFT_KIDNEY),
    ),
    Site(
        "adrenal",
        0.035,
        (240, 268),
        ((_adrenal_nodule, 1.0),),
        2,
        ABD,
        regions=(Region.RIGHT_ADRENAL, Region.LEFT_ADRENAL),
    ),
    Site(
        "pancreas",
        0.03,
        (272, 300),
        ((_cyst, 0.5), (_hypo_lesion, 0.5)),
        2,
        ABD,
        regions=(Region.PANCREATIC_HEAD, Region.PANCREATIC_BODY, Region.PANCREATIC_TAIL),
    ),
    Site(
        "paraaortic node",
        0.06,
        (300, 425),
        ((_lymph_node, 1.0),),
        2,
        ABD,
        labels=("retroperitoneum lymph node", "paraaortic"),
        station=_st_paraaortic,
    ),
    Site(
        "mesenteric node",
        0.035,
        (320, 440),
        ((_lymph_node, 1.0),),
        2,
        ABD,
        labels=("mesentery lymph node",),
        station=_st_mesentery,
    ),
    Site(
        "iliac node", 0.035, (480, 575), ((_lymph_node, 1.0),), 8, ABD, labels=("iliac lymph node",), station=_st_iliac
    ),
    Site(
        "groin node", 0.025, (590, 635), ((_lymph_node, 1.0),), 8, ABD, labels=("groin lymph node",), station=_st_groin
    ),
    Site("spine", 0.03, (40, 460), ((_sclerotic, 0.5), (_lytic, 0.5)), 1, BONE, regions=(Region.SPINE,)),
    Site("rib", 0.01, (40, 300), ((_sclerotic, 0.4), (_lytic, 0.6)), 1, BONE, regions=(Region.RIB,)),
    Site("pelvic bone", 0.015, (470, 600), ((_sclerotic, 0.5), (_lytic, 0.5)), 1, BONE, regions=(Region.PELVIC_BONE,)),
    Site("subcutaneous", 0.02, (20, 600), ((_soft_nodule, 1.0),), 7, ABD, regions=(Region.SUBCUTANEOUS,)),
)


def region_labels(region: Region, x: float, z_anat: float) -> list[str]:
    """Body-part labels of a lesion centred in ``region`` (x in mm, anatomical z)."""
    if region in LOBE_LABELS:
        return [LOBE_LABELS[region]]
    fixed = {
        Region.LIVER: ["liver"],
        Region.SPLEEN: ["spleen"],
        Region.RIGHT_KIDNEY: ["right kidney"],
        Region.LEFT_KIDNEY: ["left kidney"],
        Region.RIGHT_ADRENAL: ["right adrenal gland"],
        Region.LEFT_ADRENAL: ["left adrenal gland"],
        Region.PANCREATIC_HEAD: ["pancreatic head"],
        Region.PANCREATIC_BODY: ["pancreatic body"],
        Region.PANCREATIC_TAIL: ["pancreatic tail"],
        Region.RIB: ["rib"],
        Region.SUBCUTANEOUS: ["subcutaneous"],
    }
    if region in fixed:
        return fixed[region]
    if region == Region.SPINE:
        return ["thoracic spine" if z_anat < 255 else "lumbar", "vertebral body"]
    if region == Region.PELVIC_BONE:
        return ["sacrum"] if abs(x) < 35 else ["pelvic bone"]
    raise DataError(f"region {region!r} has no body-part label")


def pick_weighted(rng: np.random.Generator, items: list, weights: list[float]):
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def place_lesion(
    rng: np.random.Generator,
    site: Site,
    patient: Patient,
    z_world: float,
    region_map: np.ndarray,
    grid: Grid,
    taken: list[PhantomLesion],
) -> PhantomLesion | None:
    """A lesion of ``site`` centred on the slice at ``z_world``; None if it does not fit."""
    z_anat = z_world - patient.z_shift
    kind = pick_weighted(rng, [k for k, _ in site.kinds], [w for _, w in site.kinds])
    xs, ys = grid.x_mm(), grid.y_mm()
    if site.station is not None:
        side = int(rng.choice([-1, 1]))
        x0, y0 = site.station(patient, z_anat, side)
        x, y = x0 + rng.normal(0, 3), y0 + rng.normal(0, 3)
        body = list(site.labels)
        organ_hu = HU["fat"]
        region_code = None
    else:
        mask = np.isin(region_map, site.regions)
        if not mask.any():
            return None
        depth_px = ndimage.distance_transform_edt(mask)
        region_code = None
        body, organ_hu = [], 0.0
        x = y = 0.0
    labels, look, diameter, aspect = kind(rng, organ_hu)
    radius = diameter / 2
    exophytic = False
    if site.station is None:
        # centre deep enough that most of the lesion lies in the organ
        need = min(radius * 0.6, float(depth_px.max()) * 0.7) / grid.spacing
        if site.name == "kidney" and "cyst" in labels and rng.random() < 0.3:
            rows, cols = np.nonzero(mask & (depth_px <= 2.5))
            exophytic = True
        else:
            rows, cols = np.nonzero(depth_px >= max(need, 1.0))
        if rows.size == 0:
            return None
        pick = int(rng.integers(rows.size))
        x, y = float(xs[cols[pick]]), float(ys[rows[pick]])
        region_code = Region(int(region_map[rows[pick], cols[pick]]))
        body = region_labels(region_code, x, z_anat)
        organ_hu = ORGAN_HU.get(region_code, HU["soft"])
        labels, look, diameter, aspect = kind(rng, organ_hu)  # redraw with the organ's HU
        radius = diameter / 2
        if exophytic and "cyst" in labels:
            labels = labels + ["exophytic"]
    for other in taken:
        if math.hypot(other.x - x, other.y - y) < radius + other.diameter_mm / 2 + 4:
            return None
    angle = float(rng.uniform(0, math.pi))
    return PhantomLesion(
        x=float(x),
        y=float(y),
        z=float(z_world + rng.uniform(-0.3, 0.3) * min(radius, 2.0)),
        radius_x=radius,
        radius_y=radius * aspect,
        radius_z=radius * float(rng.uniform(0.8, 1.1)),
        angle=angle,
        look=look,
        labels=tuple(dict.fromkeys(body + labels)),
        site=site.name,
        kind=kind.__name__.lstrip("_"),
        coarse_type=site.coarse_type,
        window=site.window,
        shape_seed=int(rng.integers(0, 2**31)),
    )


# --------------------------------------------------------------------------- painting


def _outline_scale(theta: np.ndarray, look: Look, seed: int) -> np.ndarray:
    """Radius multiplier by angle: bumps for lobular, narrow spikes for spiculated."""
    rng = np.random.default_rng(seed)
    if look.shape == "lobular":
        phases = rng.uniform(0, 2 * math.pi, 2)
        return 1 + 0.16 * np.cos(3 * theta + phases[0]) + 0.1 * np.cos(5 * theta + phases[1])
    if look.shape == "spiculated":
        scale = np.ones_like(theta)
        for centre in rng.uniform(0, 2 * math.pi, int(rng.integers(6, 10))):
            gap = np.angle(np.exp(1j * (theta - centre)))
            scale = scale + rng.uniform(0.7, 1.1) * np.exp(-((gap / 0.15) ** 2))
        return scale
    return np.ones_like(theta)


def paint_lesion(hu: np.ndarray, lesion: PhantomLesion, z_world: float, grid: Grid, slice_seed: int) -> None:
    """Paint the lesion's cross-section at ``z_world`` into ``hu`` (in place)."""
    dz = (z_world - lesion.z) / lesion.radius_z
    if abs(dz) >= 1:
        return
    f = math.sqrt(1 - dz * dz)
    rx, ry = lesion.radius_x * f, lesion.radius_y * f
    if rx < 0.3:
        return
    look = lesion.look
    reach = max(rx, ry) * (2.0 if look.shape == "spiculated" else 1.3) + look.edge_mm * 2 + grid.spacing
    xs, ys = grid.x_mm(), grid.y_mm()
    c0, c1 = np.searchsorted(xs, [lesion.x - reach, lesion.x + reach])
    r0, r1 = np.searchsorted(ys, [lesion.y - reach, lesion.y + reach])
    if c1 <= c0 or r1 <= r0:
        return
    dx = xs[c0:c1][None, :] - lesion.x
    dy = ys[r0:r1][:, None] - lesion.y
    ca, sa = math.cos(lesion.angle), math.sin(lesion.angle)
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    phi = np.arctan2(v, u)
    dist = np.hypot(u, v)
    # radius of the ellipse along this direction, times the outline's bumps or spikes
    base_r = 1.0 / np.sqrt((np.cos(phi) / rx) ** 2 + (np.sin(phi) / ry) ** 2)
    outline = base_r * _outline_scale(phi, look, lesion.shape_seed)
    alpha = np.clip((outline - dist) / max(look.edge_mm, grid.spacing * 0.5) + 0.5, 0.0, 1.0)
    rel = dist / np.maximum(base_r, 1e-6)
    value = np.full(dist.shape, look.value, dtype=np.float32)
    if look.texture:
        rng = np.random.default_rng([lesion.shape_seed, slice_seed])
        coarse = rng.standard_normal((5, 5)).astype(np.float32)
        field = ndimage.zoom(coarse, (value.shape[0] / 5, value.shape[1] / 5), order=1)[
            : value.shape[0], : value.shape[1]
        ]
        value[: field.shape[0], : field.shape[1]] += look.texture * field
    if look.rim:
        value += np.where(rel > 0.72, look.rim, 0.0).astype(np.float32)
    if look.core is not None:
        core = np.clip((look.core_fraction - rel) / 0.08 + 0.5, 0, 1)
        value = value * (1 - core) + look.core * core
    if look.calcification is not None:
        calc = np.clip((0.3 - rel) / 0.08 + 0.5, 0, 1)
        value = value * (1 - calc) + look.calcification * calc
    region = hu[r0:r1, c0:c1]
    region[...] = region * (1 - alpha) + value * alpha
