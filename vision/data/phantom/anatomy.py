"""A parametric axial-CT body phantom in HU, rendered slice by slice.

Coordinates are millimetres: ``x`` to the image right (the patient's left, radiological
view), ``y`` down (posterior), ``z`` down the body from the lung apex (0) to the groin
(~640). Each structure is an ellipse whose size follows ``z``; :func:`render_slice`
paints them in order and returns the HU image plus a region map (which organ or lobe
each pixel belongs to), from which lesions are placed and their body-part labels read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage


class Region(IntEnum):
    """Region codes of the region map (0 = outside the body)."""

    OUTSIDE = 0
    SUBCUTANEOUS = 1
    MUSCLE = 2
    CAVITY = 3  # mediastinal / intra-abdominal fat and unlabelled soft tissue
    RIGHT_UPPER_LOBE = 4
    RIGHT_MIDDLE_LOBE = 5
    RIGHT_LOWER_LOBE = 6
    LEFT_UPPER_LOBE = 7
    LEFT_LOWER_LOBE = 8
    HEART = 9
    VESSEL = 10
    AIRWAY = 11
    LIVER = 12
    SPLEEN = 13
    RIGHT_KIDNEY = 14
    LEFT_KIDNEY = 15
    RIGHT_ADRENAL = 16
    LEFT_ADRENAL = 17
    PANCREATIC_HEAD = 18
    PANCREATIC_BODY = 19
    PANCREATIC_TAIL = 20
    STOMACH = 21
    BOWEL = 22
    SPINE = 23  # vertebral body
    BONE = 24  # posterior elements, sternum, scapula
    RIB = 25
    PELVIC_BONE = 26
    BLADDER = 27


LUNG_REGIONS = (
    Region.RIGHT_UPPER_LOBE,
    Region.RIGHT_MIDDLE_LOBE,
    Region.RIGHT_LOWER_LOBE,
    Region.LEFT_UPPER_LOBE,
    Region.LEFT_LOWER_LOBE,
)

# HU of the tissues (portal-venous contrast phase)
HU = {
    "air": -1000.0,
    "lung": -860.0,
    "fat": -100.0,
    "muscle": 50.0,
    "soft": 40.0,
    "blood": 160.0,
    "liver": 105.0,
    "spleen": 115.0,
    "kidney_cortex": 190.0,
    "kidney_medulla": 130.0,
    "pancreas": 90.0,
    "adrenal": 55.0,
    "water": 8.0,
    "bone": 320.0,
    "cortical": 800.0,
    "bowel_wall": 70.0,
}


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy variation."""

    size: float = 1.0  # body width scale
    depth: float = 1.0  # body depth scale
    fat_mm: float = 18.0  # subcutaneous fat thickness
    z_shift: float = 0.0  # craniocaudal shift of all organs
    organ_scale: float = 1.0
    bowel_seed: int = 0  # arrangement of the bowel loops

    @staticmethod
    def sample(rng: np.random.Generator) -> Patient:
        return Patient(
            size=float(rng.uniform(0.88, 1.1)),
            depth=float(rng.uniform(0.88, 1.1)),
            fat_mm=float(rng.uniform(8, 32)),
            z_shift=float(rng.uniform(-10, 10)),
            organ_scale=float(rng.uniform(0.9, 1.1)),
            bowel_seed=int(rng.integers(0, 2**31)),
        )


@dataclass(frozen=True)
class Grid:
    """The slice raster: ``rows × cols`` pixels of ``spacing`` mm, body centred."""

    rows: int
    cols: int
    spacing: float

    def x_mm(self) -> np.ndarray:
        return (np.arange(self.cols) - (self.cols - 1) / 2) * self.spacing

    def y_mm(self) -> np.ndarray:
        return (np.arange(self.rows) - (self.rows - 1) / 2) * self.spacing - 12.0

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """mm -> (col, row) pixel coordinates."""
        return x / self.spacing + (self.cols - 1) / 2, (y + 12.0) / self.spacing + (self.rows - 1) / 2


class Canvas:
    """HU image + region map with ellipse painting limited to each ellipse's bounding box."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.hu = np.full((grid.rows, grid.cols), HU["air"], dtype=np.float32)
        self.region = np.zeros((grid.rows, grid.cols), dtype=np.uint8)
        self.xs, self.ys = grid.x_mm(), grid.y_mm()

    def ellipse_mask(
        self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        if ax <= 0 or ay <= 0:
            return None
        reach = max(ax, ay)
        c0, c1 = np.searchsorted(self.xs, [cx - reach, cx + reach])
        r0, r1 = np.searchsorted(self.ys, [cy - reach, cy + reach])
        if c1 <= c0 or r1 <= r0:
            return None
        dx = self.xs[c0:c1][None, :] - cx
        dy = self.ys[r0:r1][:, None] - cy
        if angle:
            ca, sa = math.cos(angle), math.sin(angle)
            dx, dy = dx * ca + dy * sa, -dx * sa + dy * ca
        return (slice(r0, r1), slice(c0, c1)), (dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0

    def ellipse(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        value: float,
        region: Region | None = None,
        angle: float = 0.0,
        within: tuple[int, ...] | None = None,
    ) -> None:
        """Paint an ellipse; ``within`` limits it to pixels of those regions."""
        found = self.ellipse_mask(cx, cy, ax, ay, angle)
        if found is None:
            return
        box, mask = found
        if within is not None:
            mask = mask & np.isin(self.region[box], within)
        self.hu[box][mask] = value
        if region is not None:
            self.region[box][mask] = region


def _bump(z: float, start: float, end: float) -> float:
    """0 outside [start, end], rising to 1 in the middle (an organ's z profile)."""
    if z <= start or z >= end:
        return 0.0
    t = (z - start) / (end - start)
    return math.sqrt(max(0.0, 1 - (2 * t - 1) ** 2))


def _ramp(z: float, a: float, b: float) -> float:
    return min(1.0, max(0.0, (z - a) / (b - a)))


def body_half_axes(p: Patient, z: float) -> tuple[float, float]:
    """Outer body half-width and half-depth (mm) at z."""
    if z < 200:
        ax, ay = 145 + 20 * _ramp(z, 0, 120), 105 + 15 * _ramp(z, 0, 150)
    elif z < 450:
        ax, ay = 160.0, 120.0
    else:
        ax, ay = 160 + 10 * _ramp(z, 450, 560), 120 - 10 * _ramp(z, 450, 560)
    return ax * p.size, ay * p.depth


def lung_fissure_y(z: float, cay: float) -> float:
    """y of the oblique fissure: posterior at the apex, anterior at the base."""
    return cay * (0.85 - 1.5 * _ramp(z, 10, 240))


def render_slice(p: Patient, z_world: float, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy at craniocaudal position ``z_world`` (mm): (HU float32, region uint8)."""
    z = z_world - p.z_shift
    c = Canvas(grid)
    s = p.organ_scale
    ax, ay = body_half_axes(p, z)
    c.ellipse(0, 0, ax, ay, HU["fat"], Region.SUBCUTANEOUS)
    wall = p.fat_mm
    c.ellipse(0, 0, ax - wall, ay - wall, HU["muscle"], Region.MUSCLE)
    cax, cay = ax - wall - 12, ay - wall - 12
    c.ellipse(0, 0, cax, cay, HU["fat"] + 10, Region.CAVITY)
    spine_y = cay * 0.62
    dome_r, dome_l = 185.0, 200.0

    # ---- chest: lungs with lobes, mediastinum, heart, airway
    lung_top = _ramp(z, -5, 110)
    if z < 260 and lung_top > 0:
        for side in (-1, 1):
            dome = dome_r if side < 0 else dome_l
            base = 1.0 - _ramp(z, dome, dome + 60)  # posterior recess outlasts the dome
            g = (0.35 + 0.65 * lung_top) * (0.25 + 0.75 * base)
            if g <= 0.26 and z > dome + 55:
                continue
            lx, ly = side * cax * 0.5, -cay * 0.05 + (cay * 0.35 * _ramp(z, dome - 10, dome + 50))
            lax, lay = cax * 0.45 * g, cay * 0.88 * g
            found = c.ellipse_mask(lx, ly, lax, lay)
            if found is None:
                continue
            box, mask = found
            yy = np.broadcast_to(c.ys[box[0]][:, None], mask.shape)
            fissure = lung_fissure_y(z, cay)
            posterior = yy >= fissure
            if side < 0:
                anterior_region = Region.RIGHT_UPPER_LOBE if z < 120 else Region.RIGHT_MIDDLE_LOBE
                regions = np.where(posterior, Region.RIGHT_LOWER_LOBE, anterior_region)
            else:
                regions = np.where(posterior, Region.LEFT_LOWER_LOBE, Region.LEFT_UPPER_LOBE)
            c.hu[box][mask] = HU["lung"]
            c.region[box][mask] = regions[mask]
            line = mask & (np.abs(yy - fissure) < grid.spacing * 0.6)
            c.hu[box][line] = -720.0  # the oblique fissure, faintly visible
        # mediastinum between the lungs
        c.ellipse(0, -cay * 0.15, cax * 0.22 + 10 * _ramp(z, 60, 120), cay * 0.75, HU["fat"] + 20, Region.CAVITY)
        if 0 <= z < 97:  # trachea
            c.ellipse(0, -cay * 0.05, 10, 9, 30, Region.AIRWAY)
            c.ellipse(0, -cay * 0.05, 8, 7, HU["air"], Region.AIRWAY)
        elif 97 <= z < 125:  # main bronchi
            spread = 8 + 0.8 * (z - 97)
            for side in (-1, 1):
                c.ellipse(side * spread, 0, 6, 6, HU["air"], Region.AIRWAY)
        heart = _bump(z, 95, 215) * s
        if heart > 0:
            c.ellipse(12, -cay * 0.35, 62 * heart, 50 * heart, HU["soft"] + 20, Region.HEART, angle=-0.4)
            c.ellipse(14, -cay * 0.35, 46 * heart, 36 * heart, HU["blood"], Region.HEART, angle=-0.4)
        if 55 <= z < 100:  # ascending aorta, pulmonary artery, SVC
            c.ellipse(4, -cay * 0.4, 15, 15, HU["blood"], Region.VESSEL)
            c.ellipse(-24, -cay * 0.35, 9, 9, HU["blood"] - 20, Region.VESSEL)
        if 80 <= z < 110:
            c.ellipse(-2, -cay * 0.15, 13, 12, HU["blood"], Region.VESSEL)
        if 0 <= z < 230:  # sternum
            c.ellipse(0, -cay - 8, 15, 6, HU["bone"] + 150, Region.BONE)
        if z < 110:  # scapulae
            for side in (-1, 1):
                c.ellipse(side * cax * 0.72, cay * 0.9, 45, 6, HU["bone"] + 250, Region.BONE, angle=side * 0.45)

    # ---- upper abdomen
    liver = _bump(z, dome_r, 345) * s
    if liver > 0:
        c.ellipse(-cax * 0.38, -cay * 0.02, cax * 0.6 * liver, cay * 0.72 * liver, HU["liver"], Region.LIVER)
        for vx, vy in ((-0.45, 0.05), (-0.25, -0.2), (-0.55, -0.25)):
            if liver > 0.4:
                c.ellipse(cax * vx, cay * vy, 5, 5, HU["blood"] + 10, Region.VESSEL)
    spleen = _bump(z, 200, 295) * s
    if spleen > 0:
        c.ellipse(cax * 0.62, cay * 0.35, 26 * spleen, 48 * spleen, HU["spleen"], Region.SPLEEN, angle=-0.5)
    stomach = _bump(z, 195, 290) * s
    if stomach > 0:
        c.ellipse(cax * 0.35, -cay * 0.4, 40 * stomach, 30 * stomach, HU["bowel_wall"], Region.STOMACH)
        c.ellipse(cax * 0.35, -cay * 0.4, 34 * stomach, 24 * stomach, HU["water"], Region.STOMACH)
        c.ellipse(cax * 0.35, -cay * 0.58, 25 * stomach, 8 * stomach, HU["air"], Region.STOMACH)
    for side, region, z0, z1 in ((-1, Region.RIGHT_KIDNEY, 258, 378), (1, Region.LEFT_KIDNEY, 245, 365)):
        k = _bump(z, z0, z1) * s
        if k > 0:
            kx, ky = side * 62, spine_y * 0.85
            c.ellipse(kx, ky, 30 * k, 40 * k, HU["kidney_cortex"], region, angle=side * 0.45)
            c.ellipse(kx, ky, 18 * k, 26 * k, HU["kidney_medulla"], region, angle=side * 0.45)
            c.ellipse(kx - side * 14 * k, ky - 4, 8 * k, 10 * k, HU["fat"] + 30, region)
    for side, region, z0, z1 in ((-1, Region.RIGHT_ADRENAL, 232, 272), (1, Region.LEFT_ADRENAL, 240, 278)):
        a = _bump(z, z0, z1)
        if a > 0:
            ax0, ay0 = side * 42, spine_y * 0.35
            c.ellipse(ax0, ay0, 15 * a, 3, HU["adrenal"], region, angle=side * 1.0)
            c.ellipse(ax0 + side * 4, ay0 + 5, 12 * a, 2.5, HU["adrenal"], region, angle=side * 0.3)
    head = _bump(z, 268, 312) * s
    if head > 0:
        c.ellipse(-20, spine_y * 0.05, 17 * head, 14 * head, HU["pancreas"], Region.PANCREATIC_HEAD)
    body = _bump(z, 262, 300) * s
    if body > 0:
        c.ellipse(14, -spine_y * 0.05, 22 * body, 9 * body, HU["pancreas"], Region.PANCREATIC_BODY, angle=0.15)
        c.ellipse(50, spine_y * 0.2, 22 * body, 9 * body, HU["pancreas"], Region.PANCREATIC_TAIL, angle=0.45)

    # ---- vessels and spine (all levels)
    if 60 <= z < 435:
        c.ellipse(14, spine_y - 26, 11, 11, HU["blood"] + 20, Region.VESSEL)
    if 185 <= z < 450:
        c.ellipse(-22, spine_y - 30, 12, 11, HU["blood"] - 10, Region.VESSEL)
    if 435 <= z < 600:
        spread = 14 + 0.35 * (z - 435)
        for side in (-1, 1):
            c.ellipse(side * spread, spine_y - 20 - 0.3 * (z - 435), 6, 6, HU["blood"] + 20, Region.VESSEL)
            c.ellipse(side * (spread + 10), spine_y - 15 - 0.3 * (z - 435), 7, 7, HU["blood"] - 10, Region.VESSEL)
    if z < 470:  # vertebra: body, canal, posterior elements, paraspinal muscles
        for side in (-1, 1):
            c.ellipse(side * 26, spine_y + 38, 20, 15, HU["muscle"], Region.MUSCLE)
        c.ellipse(0, spine_y, 17, 15, HU["cortical"], Region.SPINE)
        c.ellipse(0, spine_y, 15, 13, HU["bone"], Region.SPINE)
        c.ellipse(0, spine_y + 24, 16, 5, HU["cortical"] - 150, Region.BONE)
        c.ellipse(0, spine_y + 22, 7, 7, 25, Region.CAVITY)
        for side in (-1, 1):
            c.ellipse(side * 20, spine_y + 12, 10, 3, HU["cortical"] - 200, Region.BONE, angle=side * 0.3)
    if 290 <= z < 580:  # psoas
        g = 0.5 + 0.5 * _ramp(z, 290, 420)
        for side in (-1, 1):
            c.ellipse(side * (30 + 0.12 * (z - 290)), spine_y + 2, 12 * g + 4, 16 * g + 4, HU["muscle"], Region.MUSCLE)
    if z < 330:  # ribs: small bright cross-sections around the cavity, obliquely
        phase = (z / 40.0) % 1.0
        for side in (-1, 1):
            for k in range(8):
                theta = math.pi * (0.08 + (k + phase) / 8.6)
                rx, ry = side * (cax + 5) * math.sin(theta), (cay + 5) * math.cos(theta)
                if ry < -cay * 0.7 and z > 250:
                    continue
                c.ellipse(rx, ry, 6, 4, HU["cortical"], Region.RIB, angle=theta)

    # ---- lower abdomen: bowel loops and colon
    if 295 <= z < 560:
        rng = np.random.default_rng([p.bowel_seed, int(z // 25)])
        for _ in range(9):
            bx, by = rng.uniform(-cax * 0.6, cax * 0.6), rng.uniform(-cay * 0.8, spine_y * 0.3)
            r = rng.uniform(8, 15)
            content = rng.choice([HU["water"], HU["air"], 260.0, -50.0], p=[0.45, 0.2, 0.2, 0.15])
            c.ellipse(bx, by, r, r, HU["bowel_wall"], Region.BOWEL, within=(Region.CAVITY,))
            c.ellipse(bx, by, r - 2.5, r - 2.5, float(content), Region.BOWEL, within=(Region.BOWEL,))
        for side in (-1, 1):
            c.ellipse(side * cax * 0.72, -cay * 0.1, 19, 19, HU["bowel_wall"], Region.BOWEL)
            c.ellipse(side * cax * 0.72, -cay * 0.1, 16, 16, -600.0, Region.BOWEL)

    # ---- pelvis: iliac wings, sacrum, hips, bladder
    if 450 <= z < 560:
        w = _bump(z, 440, 570)
        for side in (-1, 1):
            c.ellipse(
                side * cax * 0.62,
                spine_y * 0.7,
                42 * w + 6,
                9,
                HU["cortical"] - 100,
                Region.PELVIC_BONE,
                angle=-side * 0.9,
            )
            c.ellipse(
                side * cax * 0.62, spine_y * 0.7, 38 * w + 3, 5, HU["bone"], Region.PELVIC_BONE, angle=-side * 0.9
            )
    if 465 <= z < 575:
        c.ellipse(0, spine_y + 6, 32, 16, HU["cortical"] - 200, Region.PELVIC_BONE)
        c.ellipse(0, spine_y + 6, 28, 12, HU["bone"], Region.PELVIC_BONE)
    if 570 <= z:
        for side in (-1, 1):
            c.ellipse(side * cax * 0.55, 10, 24, 24, HU["cortical"] - 200, Region.PELVIC_BONE)
            c.ellipse(side * cax * 0.55, 10, 20, 20, HU["bone"], Region.PELVIC_BONE)
            c.ellipse(side * cax * 0.55, 50, 45, 30, HU["muscle"], Region.MUSCLE)
    bladder = _bump(z, 540, 660) * s
    if bladder > 0:
        c.ellipse(0, -cay * 0.45, 45 * bladder, 35 * bladder, HU["water"], Region.BLADDER)
    if 540 <= z:
        c.ellipse(0, spine_y * 0.6, 15, 14, HU["bowel_wall"], Region.BOWEL)
        c.ellipse(0, spine_y * 0.6, 10, 9, -500.0, Region.BOWEL)
    return c.hu, c.region


def add_scanner_noise(
    hu: np.ndarray, region: np.ndarray, rng: np.random.Generator, sigma_hu: float = 10.0
) -> np.ndarray:
    """Partial-volume blur plus spatially correlated quantum noise inside the body,
    rounded to HU. Air outside the body is the flat -1024 floor (a simplification that
    keeps the PNGs small: noise does not compress)."""
    blurred = ndimage.gaussian_filter(hu, 0.6, mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 0.8) * (sigma_hu / 0.33)
    image = np.rint(blurred + noise)
    image[region == Region.OUTSIDE] = -1024.0
    return image.astype(np.int16)
