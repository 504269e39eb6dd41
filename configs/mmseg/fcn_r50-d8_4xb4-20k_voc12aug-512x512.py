# Pascal VOC 2012 + SBD aug, FCN R50-D8, 512x512 crops, 20k iterations, 4 GPUs x 4 images (SyncBN):
# mmseg's stock recipe, the one mmselfsup's segmentation benchmark uses, with a torchvision-layout
# ResNet (v1b, 7x7 stem) loaded from a plain tensor state dict instead of mmseg's ResNetV1c.
# `gsg transfer segmentation train --recipe voc12aug-fcn` fills in the checkpoint; with mmseg's own
# tools/train.py pass `--cfg-options model.backbone.init_cfg.checkpoint=BACKBONE.pth`.
_base_ = "mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py"

model = dict(
    pretrained=None,
    backbone=dict(type="ResNet", depth=50, init_cfg=dict(type="Pretrained", checkpoint=None)),
)
