import torch

from captioner.concepts import ConceptTable
from training.concept_recall import POOLINGS, slot_recall

BIKE = ["a man rides a bike", "a bicycle on a road", "a man on a bicycle", "a road", "a man"]
ROAD = ["a road", "a man walks", "a street", "a man on a road", "a road at night"]


def test_slot_recall_counts_the_slots_that_find_a_shown_object():
    table = ConceptTable.load()
    bicycle, dog = table.words.index("bicycle"), table.words.index("dog")
    probabilities = torch.zeros(3, len(table.words))
    probabilities[0, bicycle] = 0.6  # shown and found
    probabilities[1, bicycle] = 0.05  # shown, under the threshold
    probabilities[2, bicycle] = 0.5  # found but not shown
    probabilities[:, dog] = torch.tensor([0.0, 0.3, 0.0])
    report = slot_recall(probabilities, [BIKE, BIKE, ROAD], table, slots=3, threshold=0.2)
    assert report["objects"]["bicycle"] == {"recall": 50.0, "precision": 50.0, "f1": 50.0}
    assert report["objects"]["boat"]["f1"] == 0.0
    assert report["slot_words_named"] == 100 / 3  # bicycle in image 0; not in 2; dog in 1 is not named
    assert report["images_with_a_slot"] == 100.0


def test_every_pooling_gives_word_probabilities_per_image():
    table = ConceptTable.load()
    generator = torch.Generator().manual_seed(0)
    head = (torch.randn(1000, 8, generator=generator), torch.zeros(1000), table.class_index(), len(table.words))
    maps = torch.randn(2, 8, 7, 7, generator=generator)
    for name, pooling in POOLINGS.items():
        probabilities = pooling(maps, head)
        assert probabilities.shape == (2, len(table.words)), name
        assert bool(((probabilities >= 0) & (probabilities <= 1 + 1e-5)).all()), name
