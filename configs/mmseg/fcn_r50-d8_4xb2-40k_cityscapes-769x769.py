# Cityscapes, FCN R50-D8, 769x769 crops, 40k iterations, 4 GPUs x 2 images (SyncBN), sliding-window
# test: mmseg's stock recipe (mmselfsup's Cityscapes benchmark) with a torchvision-layout ResNet (v1b)
# loaded from a plain tensor state dict. See fcn_r50-d8_4xb4-20k_voc12aug-512x512.py for loading.
_base_ = "mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-769x769.py"

model = dict(
    pretrained=None,
    backbone=dict(type="ResNet", depth=50, init_cfg=dict(type="Pretrained", checkpoint=None)),
)
